"""bench.run: cells one after another, failures isolated, Ctrl-C leaves nothing behind.

The engine here is a recording stand-in (a `NullEngine` with the methods run.py calls); the real
podman path is covered by tests/test_bench_e2e.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from bench_fakes import CPU, LAVAPIPE, make_cell
from engine_fakes import NullEngine

from vkrama import config, results
from vkrama.backends import Choice
from vkrama.bench import run, session
from vkrama.bench.matrix import BenchRequest, unavailable_cell
from vkrama.bench.plan import BenchParams
from vkrama.engine import Completed, ContainerSpec, ContainerStatus, ContainerSummary
from vkrama.errors import ExitStatus, VkramaError
from vkrama.hardware import HardwareProfile
from vkrama.results.records import CellResult
from vkrama.store.gguf_info import GgufInfo

DATA = Path(__file__).parent / "data" / "bench"


Behaviour = Callable[[ContainerSpec], Completed]


class FakeEngine(NullEngine):
    """Runs each spec through a behaviour keyed by backend; tracks live containers."""

    def __init__(self, behaviours: dict[str, Behaviour]) -> None:
        self.behaviours = behaviours
        self.live: dict[str, ContainerSpec] = {}
        self.ran: list[str] = []
        self.removed: list[str] = []

    def complete(self, spec: ContainerSpec) -> Completed:
        container = f"id-{len(self.ran)}"
        self.live[container] = spec
        self.ran.append(spec.labels["vkrama.backend"])
        # Like a Ctrl-C landing mid-wait, the behaviour may raise before the engine cleans up.
        completed = self.behaviours[spec.labels["vkrama.backend"]](spec)
        self.live.pop(container)
        return completed

    def containers(self, labels: Mapping[str, str] | None = None) -> list[ContainerSummary]:
        return [
            ContainerSummary(
                cid, spec.name or "", spec.image, ContainerStatus.RUNNING, spec.labels, None, ()
            )
            for cid, spec in self.live.items()
            if all(spec.labels.get(k) == v for k, v in (labels or {}).items())
        ]

    def remove(self, container: str) -> None:
        self.removed.append(container)
        self.live.pop(container, None)


def ok_cpu(_spec: ContainerSpec) -> Completed:
    return Completed(0, (DATA / "cpu-fa.json").read_text(), (DATA / "cpu.stderr").read_text())


def ok_vulkan(_spec: ContainerSpec) -> Completed:
    stdout = (DATA / "vulkan-llvmpipe.json").read_text()
    return Completed(0, stdout, (DATA / "vulkan-llvmpipe.stderr").read_text())


def no_device(_spec: ContainerSpec) -> Completed:
    stdout = (DATA / "vulkan-none.json").read_text()
    return Completed(0, stdout, (DATA / "vulkan-none.stderr").read_text())


def crashes(_spec: ContainerSpec) -> Completed:
    return Completed(134, "", "llama_model_load: error loading model\nAborted\n")


def times_out(_spec: ContainerSpec) -> Completed:
    raise VkramaError("container abc still running after 5 s", status=ExitStatus.TIMEOUT)


def interrupted(_spec: ContainerSpec) -> Completed:
    raise KeyboardInterrupt


def go(engine: FakeEngine, *choices: Choice) -> tuple[list[CellResult], bool]:
    cells = [make_cell(c, BenchParams(64, 16, 2), i) for i, c in enumerate(choices)]
    images = {c.image: ("sha256:img-" + c.backend, {"llama_cpp_build": "11669"}) for c in cells}
    return run.run_cells(engine, cells, timeout=5, images=images)


def test_two_good_cells_give_numbers_device_and_image_provenance() -> None:
    results, was_interrupted = go(FakeEngine({"cpu": ok_cpu, "vulkan": ok_vulkan}), CPU, LAVAPIPE)
    assert not was_interrupted
    assert [r.status for r in results] == ["ok", "ok"]
    assert results[1].device == "llvmpipe (LLVM 22.1.8, 256 bits) (llvmpipe)"
    assert [m.test for m in results[1].measurements] == ["pp64", "tg16"]
    assert results[1].image_id == "sha256:img-vulkan"
    assert results[1].provenance == {"llama_cpp_build": "11669"}
    assert results[1].raw_json[0]["backends"] == "Vulkan"


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (no_device, "No devices found"),
        (crashes, "llama-bench exited with 134: Aborted"),
        (times_out, "still running after 5 s"),
    ],
    ids=["vulkan-finding-no-device", "llama-bench-crashing", "cell-timing-out"],
)
def test_a_failing_cell_is_failed_with_reason_and_the_next_cell_still_runs(
    behaviour: Behaviour, reason: str
) -> None:
    engine = FakeEngine({"vulkan": behaviour, "cpu": ok_cpu})
    results, _ = go(engine, LAVAPIPE, CPU)
    assert engine.ran == ["vulkan", "cpu"]
    assert results[0].status == "failed" and reason in results[0].reason
    assert results[0].measurements == ()
    assert results[1].ok


def test_ctrl_c_removes_the_running_container_and_keeps_finished_cells() -> None:
    engine = FakeEngine({"cpu": ok_cpu, "vulkan": interrupted})
    results, was_interrupted = go(engine, CPU, LAVAPIPE, CPU)
    assert was_interrupted
    assert engine.ran == ["cpu", "vulkan"]  # the third cell never started
    assert [r.status for r in results] == ["ok", "interrupted"]
    assert engine.live == {} and engine.removed == ["id-1"]


TINY_HEADER = GgufInfo("llama", "F16", 4_194_304, 2048, "tiny-random")


@dataclass(frozen=True)
class FakeModel:
    name: str = "tiny"
    sha256: str = "ab" * 32
    files: tuple[Path, ...] = (Path("/m/tiny.gguf"),)
    size: int = 8_787_968
    metadata: GgufInfo = TINY_HEADER


def test_execute_stores_each_cell_as_it_ends_and_marks_an_interrupted_run(
    settings: config.Settings,
) -> None:
    engine = FakeEngine({"cpu": ok_cpu, "vulkan": interrupted})
    cells = [make_cell(c, BenchParams(64, 16, 2), i) for i, c in enumerate((CPU, LAVAPIPE, CPU))]
    planned = session.BenchPlan(
        request=BenchRequest("tiny", params=BenchParams(64, 16, 2)),
        model=FakeModel(),  # type: ignore[arg-type]
        profile=HardwareProfile((), (), None, (), (), None),
        cells=cells,
        unavailable=[unavailable_cell("rocm", None, "no AMD GPU")],
        images={},
        threads=2,
    )
    outcome = session.execute(engine, settings, planned)
    assert outcome.interrupted and outcome.status == "interrupted"
    assert [(r.backend, r.status) for r in outcome.results] == [
        ("rocm", "unavailable"), ("cpu", "ok"), ("vulkan", "interrupted"),
    ]  # fmt: skip
    stored = results.get_run(settings, outcome.run_id or 0)
    assert stored.run.status == "interrupted" and stored.run.info.params["threads"] == 2
    assert stored.run.info.model == {
        "name": "tiny-random",
        "architecture": "llama",
        "parameter_count": 4_194_304,
        "quantization": "F16",
        "size": 8_787_968,
    }
    assert [(c.backend, c.status) for c in stored.cells] == [
        ("rocm", "unavailable"), ("cpu", "ok"), ("vulkan", "interrupted"),
    ]  # fmt: skip
    assert engine.live == {}
