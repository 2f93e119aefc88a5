"""Containers an end-to-end test leaves behind, by its model: shared by the bench, serving
bench and tune tests, which all label theirs `vkrama.role=bench` (others use the same podman
meanwhile, so a test counts only the containers of the model it benched)."""

from __future__ import annotations

from pathlib import Path

from vkrama.engine import Engine


def bench_containers(engine: Engine, model: Path) -> list[str]:
    """Names of the bench containers (bench, bench --serve, tune) still there for `model`."""
    mine = {"vkrama.role": "bench", "vkrama.model": model.resolve().as_uri()}
    return [c.name for c in engine.containers(mine)]
