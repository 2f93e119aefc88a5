"""--dry-run: every command that changes something honours it or refuses it with a usage
error, and it is accepted after the subcommand as well as before it."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vkrama.engine import ContainerSpec, ContainerStatus, Engine
from vkrama.errors import ExitStatus

Vkrama = Callable[..., Any]
BASE = "docker.io/library/debian:sid"


def both_places(*args: str) -> list[Any]:
    """The command with --dry-run before the subcommand and after it."""
    return [
        pytest.param(["--dry-run", *args], id=f"{args[0]}-dry-run-first"),
        pytest.param([*args, "--dry-run"], id=f"{args[0]}-dry-run-after"),
    ]


@pytest.mark.parametrize(
    "args",
    [
        *both_places("pull", "MODEL"),
        *both_places("rm", "MODEL"),
        *both_places("run", "MODEL", "hello"),
        *both_places("images", "load", "/nonexistent.tar"),
        *both_places("images", "save", "cpu", "-o", "/tmp/vkrama-never-written.tar"),
    ],
)
def test_commands_that_cannot_show_their_change_refuse_dry_run(
    vkrama: Vkrama, tiny_model: Path, args: list[str]
) -> None:
    args = [str(tiny_model) if a == "MODEL" else a for a in args]
    done = vkrama(*args)
    assert done.returncode == ExitStatus.USAGE, done.stderr
    assert done.stderr.startswith("Error: --dry-run is not supported here: ")
    assert "Hint: " in done.stderr and "Traceback" not in done.stderr
    assert json.loads(vkrama("list", "--json").stdout) == []  # nothing was pulled


def test_serve_takes_dry_run_after_the_subcommand(vkrama: Vkrama, tiny_model: Path) -> None:
    args = [str(tiny_model), "--backend", "cpu", "--port", "8123"]
    before = vkrama("--dry-run", "serve", *args)
    after = vkrama("serve", *args, "--dry-run")
    assert before.returncode == after.returncode == 0, after.stderr
    assert after.stdout == before.stdout and after.stdout.startswith("podman run --detach ")


def test_bench_takes_dry_run_after_the_subcommand(vkrama: Vkrama, tiny_model: Path) -> None:
    done = vkrama("bench", str(tiny_model), "--backend", "cpu", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("podman run ") and "llama-bench" in done.stdout


@pytest.mark.podman
@pytest.mark.parametrize("where", ["first", "after"])
def test_stop_all_with_dry_run_prints_and_stops_nothing(
    vkrama: Vkrama, engine: Engine, where: str
) -> None:
    name = f"vkrama-dry-run-{secrets.token_hex(4)}"
    spec = ContainerSpec(
        image=BASE, command=("sleep", "300"), name=name, labels={"vkrama.role": "serve"}
    )
    container = engine.run(spec)
    try:
        args = (
            ["--dry-run", "stop", "--all"] if where == "first" else ["stop", "--all", "--dry-run"]
        )
        done = vkrama(*args)
        assert done.returncode == 0, done.stderr
        assert f"podman rm --force --volumes {name}\n" in done.stdout
        assert engine.state(container).status == ContainerStatus.RUNNING
    finally:
        engine.remove(container)


@pytest.mark.podman
def test_images_rm_with_dry_run_prints_and_removes_nothing(vkrama: Vkrama) -> None:
    # A name of its own under a backend no other test builds: concurrent runs do not meet.
    tag = f"localhost/vkrama/oneapi:dry-run-{secrets.token_hex(4)}"
    subprocess.run(["podman", "tag", BASE, tag], check=True)
    try:
        done = vkrama("images", "rm", "oneapi", "--dry-run")
        assert done.returncode == 0, done.stderr
        assert f"podman rmi {tag}\n" in done.stdout
        kept = subprocess.run(["podman", "image", "exists", tag])
        assert kept.returncode == 0
    finally:
        subprocess.run(["podman", "rmi", tag], capture_output=True)
