"""Podman's API service dies mid-run and comes back (issue 32.2): vkrama waits for it (up to
settings engine.reconnect), goes on with the container it started and leaves none behind;
past the window it says which container it left. Real podman: a private `podman system
service` on a unix socket this test starts, kills (SIGKILL) and starts again, reached through
CONTAINER_HOST; the containers run on under conmon meanwhile, as on a user's machine where
systemd's socket brings the service back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from vkrama.engine.socket import ping

pytestmark = [pytest.mark.podman, pytest.mark.slow]

READY_S = 120  # a loaded 2-core box starts a podman service in seconds; this bounds a hang
OUTAGE_S = 2.0  # how long the service stays dead: the fault's length, not a readiness wait
RUN_S = 900  # a whole vkrama run on a loaded box
# llama-bench waits 4 s between its tests: its container lives that long on any machine, so
# the kill lands mid-run however fast the box is.
BENCH = ("--backend", "cpu", "-p", "64", "-n", "16", "-r", "2", "--json", "--no-save",
         "--", "--delay", "4")  # fmt: skip


class Service:
    """`podman system service` on a private socket, over the machine's own image store."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "podman.sock"
        self.url = f"unix://{self.path}"
        self.log = root / "service.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.path.unlink(missing_ok=True)  # a killed service leaves its socket file
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                ["podman", "system", "service", "--time=0", self.url],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + READY_S
        while not ping(self.url, timeout=1.0):  # ready when it answers, polled
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the podman service never answered"
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the service alone: conmon and the containers run on."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.kill()
        self.path.unlink(missing_ok=True)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    made = Service(Path("/tmp") / f"vk-rc-{tmp_path.name}")  # short: socket paths are limited
    made.start()
    yield made
    made.stop()
    shutil.rmtree(made.path.parent, ignore_errors=True)


@pytest.fixture
def model(tiny_model: Path, tmp_path: Path, backend_image: Callable[[str], str]) -> Path:
    """The tiny model at a path of this test alone: its containers carry it as a label.
    (The cpu image is made first if this machine lacks it.)"""
    backend_image("cpu")
    mine = tmp_path / "tiny.gguf"
    shutil.copyfile(tiny_model, mine)
    return mine


def ours(model: Path, running: bool = False) -> list[str]:
    """The ids of this test's containers (any state, or running only), from podman's own
    CLI: it reads the store directly, with or without the service."""
    argv = ["podman", "ps", "--format", "{{.ID}}", "--filter", f"label=vkrama.model=file://{model}"]
    done = subprocess.run(argv + ([] if running else ["-a"]), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def start(service: Service, *args: str, reconnect: int = 60) -> subprocess.Popen[str]:
    env = {**os.environ, "CONTAINER_HOST": service.url, "VKRAMA_ENGINE_RECONNECT": str(reconnect)}
    return subprocess.Popen(
        [sys.executable, "-m", "vkrama", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def kill_once_running(service: Service, model: Path, run: subprocess.Popen[str]) -> str:
    """Kill the service as soon as this test's container runs; its id. The container must
    still run after the kill, or the fault missed the run (the test says so)."""
    deadline = time.monotonic() + RUN_S
    while not (found := ours(model, running=True)):
        assert run.poll() is None, f"vkrama ended before its container ran: {run.stderr}"
        assert time.monotonic() < deadline, "no container of this test ever ran"
        time.sleep(0.05)
    service.kill()
    assert found[0] in ours(model, running=True), "the container ended before the kill"
    return found[0]


def outlive(service: Service) -> None:
    time.sleep(OUTAGE_S)  # the outage itself (see OUTAGE_S)
    service.start()


def finish(run: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = run.communicate(timeout=RUN_S)
    return run.returncode, out, err


SERVE_BENCH = ("--serve", "--backend", "cpu", "--concurrency", "1", "--requests", "24",
               "--gen-tokens", "16", "--json", "--no-save")  # fmt: skip


@pytest.mark.parametrize("args", [BENCH, SERVE_BENCH], ids=["bench", "bench-serve"])
def test_a_bench_waits_out_a_podman_restart_and_removes_its_container(
    service: Service, model: Path, args: tuple[str, ...]
) -> None:
    # Before: 'failed: remove …: lost the connection to podman', exit 18, container left.
    run = start(service, "bench", str(model), *args)
    kill_once_running(service, model, run)
    outlive(service)
    code, out, err = finish(run)
    assert code == 0, err
    assert {row["status"] for row in json.loads(out)} == {"ok"}
    assert ours(model) == []


def test_serve_detached_is_ready_across_a_podman_restart(
    service: Service, model: Path, tmp_path: Path
) -> None:
    name = f"vk-rc-{tmp_path.name}"[:60]
    run = start(service, "serve", str(model), "--backend", "cpu", "--port", "auto", "--name",
                name, "-d", "--json")  # fmt: skip
    try:
        container = kill_once_running(service, model, run)
        outlive(service)
        code, out, err = finish(run)
        assert code == 0, err
        said = json.loads(out)
        assert said["name"] == name and said["id"].startswith(container)
        assert ours(model, running=True) == [container]  # detached: it serves on
    finally:
        env = {**os.environ, "CONTAINER_HOST": service.url}
        subprocess.run([sys.executable, "-m", "vkrama", "stop", name], env=env,
                       capture_output=True, timeout=RUN_S)  # fmt: skip
    assert ours(model) == []


def test_past_the_window_a_run_says_which_container_it_left(service: Service, model: Path) -> None:
    run = start(service, "bench", str(model), *BENCH, reconnect=3)
    container = kill_once_running(service, model, run)
    code, _out, err = finish(run)  # the service stays away: vkrama gives up after 3 s
    service.start()
    try:
        assert code != 0
        assert f"podman rm -f {container[:12]}" in err, err
        assert "within 3 s (settings engine.reconnect)" in err, err
    finally:
        subprocess.run(["podman", "rm", "-f", *ours(model)], capture_output=True)


def test_a_foreground_server_serves_on_across_a_podman_restart(
    service: Service, model: Path
) -> None:
    # Its log stream ends when the service dies: that is not the server stopping.
    run = start(service, "serve", str(model), "--backend", "cpu", "--port", "auto")
    assert run.stderr is not None
    banner = run.stderr.readline()  # once ready
    assert banner.startswith("Serving tiny at http://127.0.0.1:"), banner
    url = banner.split()[3]
    (container,) = ours(model, running=True)
    service.kill()
    outlive(service)
    asked = {"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    answer = requests.post(f"{url}/chat/completions", json=asked, timeout=RUN_S)
    assert answer.status_code == 200
    assert run.poll() is None and ours(model, running=True) == [container]
    run.send_signal(signal.SIGINT)
    code, _out, err = finish(run)
    assert code == 0 and "Stopping vkrama-" in err, err  # as after any Ctrl-C
    assert ours(model) == [], err
