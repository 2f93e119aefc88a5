"""Stand-ins shared by the bench and results tests: a backends.Choice, planned cells,
finished cells and stored runs, and the charts and reports drawn of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vkrama import config, results
from vkrama.backends import Choice
from vkrama.backends.compile_cache import CompileCache
from vkrama.bench.plan import BenchCell, BenchParams, Slot, plan_cell
from vkrama.results.records import CellResult, CellStatus, Measurement

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
    *,
    env_overrides: Mapping[str, str] | None = None,
    env_unset: tuple[str, ...] = (),
    compile_cache: CompileCache | None = None,
) -> BenchCell:
    image = f"localhost/vkrama/{choice.backend}:latest"
    slot = Slot(choice, image, "abcd1234", position, env_overrides or {}, env_unset, compile_cache)
    return plan_cell(slot, MODEL, "tiny", params or BenchParams(), threads=4)


# Schema 1 (vkrama 0.1) as it was written: no runs.model, no measurements.n_depth.
SCHEMA_1 = """
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started TEXT NOT NULL, finished TEXT,
 status TEXT NOT NULL, host TEXT NOT NULL, kernel TEXT NOT NULL, gpus TEXT NOT NULL,
 gpu_key TEXT NOT NULL, model_name TEXT NOT NULL, model_sha256 TEXT NOT NULL,
 params TEXT NOT NULL, vkrama_version TEXT NOT NULL);
CREATE TABLE cells (id INTEGER PRIMARY KEY AUTOINCREMENT,
 run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, position INTEGER NOT NULL,
 backend TEXT NOT NULL, driver TEXT, device TEXT NOT NULL, status TEXT NOT NULL,
 reason TEXT NOT NULL, image TEXT NOT NULL, image_id TEXT NOT NULL, provenance TEXT NOT NULL,
 command TEXT NOT NULL, raw_json TEXT, stderr_tail TEXT NOT NULL, duration_s REAL NOT NULL);
CREATE TABLE measurements (id INTEGER PRIMARY KEY AUTOINCREMENT,
 cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE, test TEXT NOT NULL,
 n_prompt INTEGER NOT NULL, n_gen INTEGER NOT NULL, tps REAL NOT NULL, tps_stddev REAL NOT NULL,
 samples TEXT NOT NULL, backends TEXT NOT NULL, gpu_info TEXT NOT NULL);
"""

SHA = "ab" * 32
MODEL_FACTS = {
    "name": "tiny",
    "architecture": "llama",
    "parameter_count": 3_934_464,
    "quantization": "F16",
    "size": 7_873_536,
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


def llama_bench_entry(backend: str, m: Measurement, depth: int = 0) -> dict[str, object]:
    """The fields of one llama-bench `-o json` entry that vkrama reads, as build 11669 wrote
    them for the tiny model on this machine's cpu and vulkan/lavapipe cells."""
    gpu = backend != "cpu"
    return {
        "build_commit": "Debian",
        "build_number": 11669,
        "backends": "Vulkan" if gpu else "CPU",
        "gpu_info": "llvmpipe (LLVM 22.1.8, 256 bits)" if gpu else "",
        "model_type": "llama ?B F16",
        "model_size": 7873536,
        "model_n_params": 3934464,
        "n_gpu_layers": 99 if gpu else 0,
        "flash_attn": -1,
        "n_prompt": m.n_prompt,
        "n_gen": m.n_gen,
        "n_depth": depth,
        "avg_ts": m.tps,
        "stddev_ts": m.tps_stddev,
        "samples_ts": list(m.samples),
    }


def cell(
    backend: str,
    driver: str | None,
    pp: float,
    tg: float,
    sd: float = 1.0,
    ok: bool = True,
    tg_sd: float | None = None,
) -> CellResult:
    """A finished cell measuring pp64 and tg16 (stddev `sd`, or `tg_sd` for tg16)."""
    tsd = sd if tg_sd is None else tg_sd
    found = (
        Measurement("pp64", 64, 0, pp, sd, (pp - sd, pp + sd), "X", ""),
        Measurement("tg16", 0, 16, tg, tsd, (tg - tsd, tg + tsd), "X", ""),
    )
    return CellResult(
        backend=backend,
        driver=driver,
        device="llvmpipe (llvmpipe)" if driver else "CPU",
        status=CellStatus.OK if ok else CellStatus.FAILED,
        reason="" if ok else "ggml_vulkan: No devices found",
        image=f"localhost/vkrama/{backend}:latest",
        image_id=f"sha256:{backend}",
        provenance={
            "backend": backend,
            "llama_cpp_build": "11669",
            "ggml_version": "0.27.0-1",
            **({"mesa": "26.2.6-1"} if driver else {}),
        },
        measurements=found if ok else (),
        raw_json=[llama_bench_entry(backend, m) for m in found],
        command=("llama-bench", "-o", "json"),
    )


def store_run(settings: config.Settings, *cells: CellResult, **kw: object) -> int:
    run_id = results.start_run(settings, info(**kw))
    for position, c in enumerate(cells):
        results.add_cell(settings, run_id, position, c)
    results.finish_run(settings, run_id, results.RunStatus.OK)
    return run_id


def drawn(vkrama: Callable[..., Any], command: str, out: Path, *args: str) -> str:
    """`vkrama results COMMAND ARGS -o OUT` (chart or report), which must succeed and say
    where it wrote; the text it wrote (an SVG or HTML; "" for a PNG)."""
    done = vkrama("results", command, *args, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{out}\n"
    return "" if out.suffix == ".png" else out.read_text()
