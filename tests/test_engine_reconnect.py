"""Podman's API service dies mid-run and comes back (issue 32.2): vkrama waits for it (up to
settings engine.reconnect), goes on with the container it started and leaves none behind;
past the window it says which container it left. Real podman: a private `podman system
service` on a unix socket this test starts, kills (SIGKILL) and starts again, reached through
CONTAINER_HOST; the containers run on under conmon meanwhile, as on a user's machine where
systemd's socket brings the service back."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import requests

from vkrama.engine import Podman, archives, images
from vkrama.engine.socket import Endpoint, ping
from vkrama.progress import BuildProgress, Event

pytestmark = [pytest.mark.podman, pytest.mark.slow]

READY_S = 120  # a loaded 2-core box starts a podman service in seconds; this bounds a hang
OUTAGE_S = 2.0  # how long the service stays dead: the fault's length, not a readiness wait
RUN_S = 900  # a whole vkrama run on a loaded box
T = TypeVar("T")
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


def during_an_outage(service: Service, call: Callable[[], T]) -> T:
    """`call()` made while the service is dead; it comes back `OUTAGE_S` later."""
    service.kill()
    back = threading.Thread(target=outlive, args=(service,))
    back.start()
    try:
        return call()
    finally:
        back.join()


def test_image_calls_wait_out_a_podman_restart(
    service: Service, backend_image: Callable[[str], str], tmp_path: Path
) -> None:
    # Before: each failed at once with 'lost the connection to podman', exit 18.
    engine = Podman(Endpoint(service.url, "CONTAINER_HOST"), reconnect_s=60)
    base = backend_image("cpu")
    tag = f"localhost/vkrama-test/reconnect:{tmp_path.name[-20:].lower()}"
    containerfile = f"FROM {base}\nCOPY known.txt /known.txt\n"  # no RUN: podman alone builds it
    context = _tar({"Containerfile": containerfile, "known.txt": tmp_path.name})
    built = during_an_outage(service, lambda: images.build(engine, context, "Containerfile",
                                                           tags=[tag]))  # fmt: skip
    try:
        found = during_an_outage(service, lambda: images.inspect(engine, tag))
        assert found is not None and found.id == built
        listed = during_an_outage(service, lambda: images.list_images(engine, tag))
        assert [info.id for info in listed] == [built]
        known = during_an_outage(service, lambda: images.read_file(engine, tag, "/known.txt"))
        assert known == tmp_path.name.encode()
        archive = tmp_path / "saved.tar"
        during_an_outage(service, lambda: archives.save(engine, [tag], archive))
        assert tarfile.is_tarfile(archive)
        assert during_an_outage(service, lambda: images.remove(engine, tag)) is True
        assert images.inspect(engine, tag) is None
        names = during_an_outage(service, lambda: archives.load(engine, archive))
        assert tag in names
        assert images.inspect(engine, tag) is not None
    finally:
        subprocess.run(["podman", "rmi", tag], capture_output=True)
    assert not [c for c in engine.containers() if c.image.startswith(tag)]  # read_file's


def _tar(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return out.getvalue()


def test_a_build_cut_off_mid_step_starts_again_from_its_cache(
    service: Service, backend_image: Callable[[str], str], tmp_path: Path
) -> None:
    engine = Podman(Endpoint(service.url, "CONTAINER_HOST"), reconnect_s=60)
    name = tmp_path.name[-20:].lower()
    # A base of this test alone: what the killed build leaves is told apart by it.
    base = images.build(engine, _tar({"Containerfile": f"FROM {backend_image('cpu')}\nCOPY "
                        "known.txt /known.txt\n", "known.txt": name}), "Containerfile",
                        tags=[f"localhost/vkrama-test/reconnect-base:{name}"])  # fmt: skip
    tag = f"localhost/vkrama-test/reconnect-run:{name}"
    # Its RUN step lasts 4 s on any machine: the kill lands inside it.
    context = _tar({"Containerfile": f"FROM {base}\nRUN sleep 4\nLABEL test={name}\n"})
    seen: list[str] = []
    restarting: list[threading.Thread] = []

    def watch(event: Event) -> None:
        assert isinstance(event, BuildProgress)
        seen.append(event.line)
        if event.line.startswith("STEP 2/3") and not restarting:
            service.kill()
            restarting.append(threading.Thread(target=outlive, args=(service,)))
            restarting[0].start()

    try:
        built = images.build(engine, context, "Containerfile", tags=[tag], on_progress=watch)
        restarting[0].join()
        found = images.inspect(engine, tag)
        assert found is not None and found.id == built and found.labels["test"] == name
        again = [i for i, line in enumerate(seen) if line.startswith("(podman's service came")]
        assert len(again) == 1, seen
        assert seen.count("STEP 2/3: RUN sleep 4") == 2, seen  # cut off, then run whole
    finally:
        # What the killed service left (buildah's containers of the cut step) is on `base`.
        argv = ["podman", "ps", "-a", "--external", "--format", "{{.ID}} {{.ImageID}}"]
        rows = subprocess.run(argv, capture_output=True, text=True).stdout.split("\n")
        left = [row.split()[0] for row in rows if row and base.startswith(row.split()[1])]
        subprocess.run(["podman", "rm", "-f", *left], capture_output=True)
        subprocess.run(["podman", "rmi", tag, base], capture_output=True)
