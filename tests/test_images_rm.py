"""`vkrama images rm` removes a backend's names and nothing else (real podman)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from vkrama import __version__
from vkrama.errors import ExitStatus

pytestmark = [pytest.mark.podman, pytest.mark.slow]


def tags() -> set[str]:
    done = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return set(done.stdout.split())


def test_rm_removes_every_name_of_that_backend_and_keeps_shared_layers(
    vkrama: Callable[..., Any],
) -> None:
    assert vkrama("images", "build", "cpu").returncode == 0
    # an oneapi image takes 775 MB of wheels to build: stand one in by naming the cpu image
    # so, and give a real one (another test's, on this shared store) its names back after
    names = [f"localhost/vkrama/oneapi:{__version__}", "localhost/vkrama/oneapi:latest"]
    real = {}
    for name in names:
        found = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", name],
                               capture_output=True, text=True)  # fmt: skip
        if found.returncode == 0:
            real[name] = found.stdout.strip()
    for name in names:
        subprocess.run(["podman", "tag", "localhost/vkrama/cpu:latest", name], check=True)
    try:
        done = vkrama("images", "rm", "oneapi")
        assert done.returncode == 0, done.stderr
        assert all(name in done.stdout for name in names)
        assert not set(names) & tags()
        assert "localhost/vkrama/cpu:latest" in tags()
        listed = {
            row["backend"]: row for row in json.loads(vkrama("images", "list", "--json").stdout)
        }
        assert listed["oneapi"]["built"] is False
        assert listed["cpu"]["built"] is True
        again = vkrama("images", "rm", "oneapi")
        assert again.returncode == ExitStatus.NOT_FOUND
        assert again.stderr.startswith("Error: no image to remove for: oneapi\nHint: ")
    finally:
        for name in names:
            subprocess.run(["podman", "rmi", name], capture_output=True)
        for name, image in real.items():
            subprocess.run(["podman", "tag", image, name], check=True)
