"""Stand-ins shared by the bench unit tests: a backends.Choice and planned cells."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vkrama.bench.plan import BenchCell, BenchParams, plan_cell


@dataclass(frozen=True)
class FakeChoice:
    """The fields of backends.Choice that bench.plan reads."""

    backend: str = "cpu"
    driver: str | None = None
    gpu: object = None
    devices: tuple[str, ...] = ()
    group_add: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    reason: str = "asked for"
    device_label: str = "CPU"


CPU = FakeChoice()
LAVAPIPE = FakeChoice(
    backend="vulkan",
    driver="lavapipe",
    devices=("/dev/dri/renderD128",),
    group_add=("105",),
    env={"GGML_VK_VISIBLE_DEVICES": "0", "VK_DRIVER_FILES": "/usr/share/vulkan/icd.d/lvp_icd.json"},
    device_label="llvmpipe (lavapipe)",
)
MODEL = (Path("/data/models/tiny.gguf"),)


def make_cell(
    choice: FakeChoice,
    params: BenchParams | None = None,
    position: int = 0,
    **kw: object,
) -> BenchCell:
    return plan_cell(
        choice,  # type: ignore[arg-type]
        f"localhost/vkrama/{choice.backend}:latest",
        MODEL,
        "tiny",
        params or BenchParams(),
        threads=4,
        run_token="abcd1234",
        position=position,
        **kw,  # type: ignore[arg-type]
    )
