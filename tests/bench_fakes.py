"""Stand-ins shared by the bench and results tests: a backends.Choice, planned cells,
finished cells and stored runs."""

from __future__ import annotations

from pathlib import Path

from vkrama import config, results
from vkrama.backends import Choice
from vkrama.bench.measurements import Measurement
from vkrama.bench.plan import BenchCell, BenchParams, plan_cell
from vkrama.bench.run import CellResult

CPU = Choice(backend="cpu", driver=None, gpu=None, reason="asked for")
LAVAPIPE = Choice(
    backend="vulkan",
    driver="lavapipe",
    gpu=None,
    devices=("/dev/dri/renderD128",),
    group_add=("105",),
    env={"GGML_VK_VISIBLE_DEVICES": "0", "VK_DRIVER_FILES": "/usr/share/vulkan/icd.d/lvp_icd.json"},
    reason="asked for",
)
MODEL = (Path("/data/models/tiny.gguf"),)


def make_cell(
    choice: Choice,
    params: BenchParams | None = None,
    position: int = 0,
    **kw: object,
) -> BenchCell:
    return plan_cell(
        choice,
        f"localhost/vkrama/{choice.backend}:latest",
        MODEL,
        "tiny",
        params or BenchParams(),
        threads=4,
        run_token="abcd1234",
        position=position,
        **kw,  # type: ignore[arg-type]
    )


SHA = "ab" * 32
MODEL_FACTS = {
    "name": "tiny",
    "architecture": "llama",
    "parameter_count": 4_194_304,
    "quantization": "F16",
    "size": 8_787_968,
}


def info(**overrides: object) -> results.RunInfo:
    values: dict[str, object] = {
        "host": "box",
        "kernel": "6.1.0",
        "gpus": [],
        "gpu_key": "none",
        "model_name": "tiny",
        "model_sha256": SHA,
        "params": {"n_prompt": 64, "n_gen": 16, "repetitions": 2, "threads": 2},
        "vkrama_version": "0.1.0",
        "model": dict(MODEL_FACTS),
    }
    values.update(overrides)
    return results.RunInfo(**values)  # type: ignore[arg-type]


def cell(
    backend: str, driver: str | None, pp: float, tg: float, sd: float = 1.0, ok: bool = True
) -> CellResult:
    found = (
        Measurement("pp64", 64, 0, pp, sd, (pp - sd, pp + sd), "X", ""),
        Measurement("tg16", 0, 16, tg, sd, (tg - sd, tg + sd), "X", ""),
    )
    return CellResult(
        backend=backend,
        driver=driver,
        device="llvmpipe (llvmpipe)" if driver else "CPU",
        status="ok" if ok else "failed",
        reason="" if ok else "ggml_vulkan: No devices found",
        image=f"localhost/vkrama/{backend}:latest",
        image_id=f"sha256:{backend}",
        provenance={"backend": backend, "llama_cpp_build": "11669", "mesa": "26.2.6-1"},
        measurements=found if ok else (),
        raw_json=[{"avg_ts": pp}],
        command=("llama-bench", "-o", "json"),
    )


def store_run(settings: config.Settings, *cells: CellResult, **kw: object) -> int:
    run_id = results.start_run(settings, info(**kw))
    for position, c in enumerate(cells):
        results.add_cell(settings, run_id, position, c)
    results.finish_run(settings, run_id, "ok")
    return run_id
