"""Bench on a real host that is not quiet, and a bench whose vkrama is killed with SIGKILL.

Real podman, the real cpu image and llama-bench, a real busy-loop process, a real kill -9.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vkrama.engine import Engine

pytestmark = [pytest.mark.podman, pytest.mark.slow]


def test_bench_cells_get_no_network(vkrama: Callable[..., Any], tiny_model: Path) -> None:
    # llama-bench reads a mounted file and talks to nobody: rootless, a network would cost
    # a slirp4netns process per cell and need /dev/net/tun
    done = vkrama("--dry-run", "bench", str(tiny_model), "--backend", "cpu,vulkan")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("podman run ")]
    assert len(lines) == 2 and all("--network none" in line for line in lines)


@pytest.fixture
def busy_loop() -> Iterator[subprocess.Popen[bytes]]:
    """A process that keeps one CPU busy for as long as the test runs."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield process
    process.kill()
    process.wait()


def test_a_cell_beside_a_busy_loop_is_stored_and_reported_as_on_a_busy_host(
    vkrama: Callable[..., Any], tiny_model: Path, busy_loop: subprocess.Popen[bytes]
) -> None:
    # Long enough for several of the watch's samples (4 a second): a cell over before the
    # second sample has no figure for other processes, and so no warning.
    done = vkrama("bench", str(tiny_model), "--backend", "cpu", "-p", "512", "-n", "16", "-r", "3")
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stdout.splitlines() if line.startswith("warning: cpu ran")]
    assert len(warning) == 1 and "busy host (other processes kept" in warning[0], done.stdout
    shown = json.loads(vkrama("results", "show", "latest", "--json").stdout)[0]
    load = shown["rows"][0]["host_load"]
    # the loop holds about one CPU (less while llama-bench's threads compete with it); the
    # cell's own CPU time is not counted, or this would be near every CPU of the host
    assert 0.4 <= load["others_cpus"] <= load["cpus"], load
    assert load["load_before"] is not None and load["load_after"] is not None
    assert shown["rows"][0]["busy_host"].startswith("other processes kept")
    md = vkrama("results", "export", "latest", "--format", "md").stdout
    assert "- warning: run 1, cpu ran on a busy host (" in md
    table = vkrama("results", "show", "latest").stdout
    assert "warning: cpu ran on a busy host (" in table
    verdict = vkrama("--dry-run", "serve", str(tiny_model), "--backend", "best")
    assert "warning: cpu was measured on a busy host (" in verdict.stderr, verdict.stderr


def run_containers(engine: Engine, token: str) -> list[str]:
    return [c.name for c in engine.containers({"vkrama.bench-run": token})]


def test_a_bench_killed_with_sigkill_is_marked_abandoned_and_its_container_swept(
    vkrama: Callable[..., Any], tiny_model: Path, engine: Engine
) -> None:
    long_cell = ("--backend", "cpu", "-p", "512", "-n", "128", "-r", "1000")
    process = subprocess.Popen(
        [sys.executable, "-m", "vkrama", "bench", str(tiny_model), *long_cell],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ),
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "[1/1] cpu: running llama-bench" in line:
            break
    listed = json.loads(vkrama("results", "list", "--json").stdout)
    assert [(r["status"], r["owner"]["pid"]) for r in listed] == [("running", process.pid)]
    token = listed[0]["token"]
    while not run_containers(engine, token):  # created right after that line; not yet seen
        assert process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()  # reaped: no zombie keeps its pid alive
    left = run_containers(engine, token)
    assert len(left) == 1  # nobody removes it: llama-bench goes on, or exits and stays

    listed = json.loads(vkrama("results", "list", "--json").stdout)
    assert [r["status"] for r in listed] == ["abandoned"]
    again = vkrama("bench", str(tiny_model), "--backend", "cpu", "-p", "16", "-n", "4", "-r", "1")
    assert again.returncode == 0, again.stderr
    assert f"removed {left[0]}, left by an abandoned run" in again.stderr
    assert run_containers(engine, token) == []
    assert [r["status"] for r in json.loads(vkrama("results", "list", "--json").stdout)] == [
        "ok",
        "abandoned",
    ]
