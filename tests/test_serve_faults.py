"""Serve under hostile input and faults: odd model names, secrets, signals at bad moments,
servers that never answer. Real podman, real llama-server, the tiny model."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import examplemodel
import pytest
import requests
from test_serve_cli_e2e import (  # noqa: F401
    Vkrama,
    chat,
    no_servers_left,
    only_this_session,
    serve_containers,
)

from vkrama.engine import Engine, Podman
from vkrama.serve import plan, ready

pytestmark = [pytest.mark.podman, pytest.mark.slow]


@pytest.fixture(scope="module")
def weird_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model under a name with a comma (podman's --mount and llama-server's
    --alias both split at commas)."""
    path = tmp_path_factory.mktemp("weird") / "we,ird.gguf"
    shutil.copyfile(tiny_model, path)
    return path


def listed_models(url: str) -> set[str]:
    answer = requests.get(f"{url}/v1/models", timeout=10)
    answer.raise_for_status()
    return {entry["id"] for entry in answer.json()["data"]}


def test_the_printed_dry_run_command_of_a_comma_named_model_runs_and_serves(
    vkrama: Vkrama, weird_model: Path, engine: Engine, tmp_path: Path
) -> None:
    name = f"vkrama-test-comma-{tmp_path.name[-12:]}".lower()
    done = vkrama("--dry-run", "serve", str(weird_model), "--backend", "cpu", "--port", "auto",
                  "--name", name)  # fmt: skip
    assert done.returncode == 0, done.stderr
    argv = shlex.split(done.stdout)
    port = int(re.search(r"--publish 127\.0\.0\.1:(\d+):8080", done.stdout)[1])  # type: ignore[index]
    started = subprocess.run(argv, capture_output=True, text=True)
    try:
        assert started.returncode == 0, started.stderr
        url = plan.base_url("127.0.0.1", port)
        ready.wait_ready(url, "we_ird", 120, lambda: engine.alive(name))
        assert listed_models(url) == {"we_ird"}
    finally:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True)


def test_a_comma_named_model_serves_and_answers_under_an_alias_kept_whole(
    vkrama: Vkrama,
    weird_model: Path,
    no_servers_left: None,  # noqa: F811
) -> None:
    done = vkrama("serve", str(weird_model), "--backend", "cpu", "--port", "auto", "-d",
                  "--timeout", "120")  # fmt: skip
    assert done.returncode == 0, done.stderr
    name, url = done.stdout.split()
    try:
        assert listed_models(url) == {"we_ird"}
        assert chat(url)
    finally:
        vkrama("stop", name)


def all_command_lines() -> str:
    """Every process's argv on this host, as `ps` would show them."""
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"))
        except OSError:  # the process ended meanwhile
            continue
    return "\n".join(lines)


def test_the_api_key_shows_in_no_inspect_and_no_process_list_yet_guards_the_server(
    vkrama: Vkrama,
    tiny_model: Path,
    tmp_path: Path,
    no_servers_left: None,  # noqa: F811
) -> None:
    key = f"sk-{tmp_path.name[-10:]}-never-shown"
    key_file = tmp_path / "key"
    key_file.write_text(f"{key}\n")
    done = vkrama("serve", str(tiny_model), "--backend", "cpu", "--port", "auto", "-d",
                  "--api-key-file", str(key_file))  # fmt: skip
    assert done.returncode == 0, done.stderr
    name, url = done.stdout.split()
    try:
        inspected = subprocess.run(["podman", "inspect", name], capture_output=True, text=True)
        assert inspected.returncode == 0 and name in inspected.stdout
        assert key not in inspected.stdout
        assert "--api-key-file" in all_command_lines()  # the server runs, reading a file
        assert key not in all_command_lines()
        # The stored secret went once podman copied it into the container.
        listed = subprocess.run(["podman", "secret", "ls", "--format", "{{.Name}}"],
                                capture_output=True, text=True, check=True)  # fmt: skip
        assert not [s for s in listed.stdout.split() if s.startswith(name)]
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        for wrong in ({}, {"Authorization": "Bearer sk-wrong"}):
            answer = requests.post(f"{url}/v1/chat/completions", json=body, headers=wrong,
                                   timeout=30)  # fmt: skip
            assert answer.status_code == 401
        assert chat(url, key=key)
    finally:
        vkrama("stop", name)


class HoldingProxy:
    """A unix-socket proxy in front of podman's API that holds back podman's answer to
    `POST …/containers/create`: podman has made the container (state `created`) but vkrama
    does not know its id yet. The test sends its signal in exactly that window."""

    def __init__(self, path: Path, upstream: str) -> None:
        self.path, self.upstream = path, upstream
        self.created = threading.Event()  # podman answered the create call
        self.release = threading.Event()  # let the answer through
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.upstream)
            creating = threading.Event()
            threading.Thread(target=self._pump, args=(client, server, creating, True),
                             daemon=True).start()  # fmt: skip
            threading.Thread(target=self._pump, args=(server, client, creating, False),
                             daemon=True).start()  # fmt: skip

    def _pump(self, source: socket.socket, sink: socket.socket, creating: threading.Event,
              request: bool) -> None:  # fmt: skip
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if request and b"POST " in data and b"/containers/create" in data:
                    creating.set()
                elif not request and creating.is_set() and not self.release.is_set():
                    self.created.set()
                    self.release.wait()
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.release.set()
        self.listener.close()


@pytest.fixture
def holding_proxy(engine: Podman, tmp_path: Path) -> Iterator[HoldingProxy]:
    upstream = engine.endpoint.url.removeprefix("unix://")
    path = Path("/tmp") / f"vk-hold-{tmp_path.name[-20:]}.sock"  # unix socket paths are short
    proxy = HoldingProxy(path, upstream)
    yield proxy
    proxy.close()
    path.unlink(missing_ok=True)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_while_podman_creates_the_container_leaves_no_container_in_any_state(
    signum: signal.Signals, tiny_model: Path, engine: Engine, holding_proxy: HoldingProxy,
    no_servers_left: None,  # noqa: F811
) -> None:  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "vkrama", "--engine-url", f"unix://{holding_proxy.path}",
         "serve", str(tiny_model), "--backend", "cpu", "--port", "auto"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holding_proxy.created.wait(120), "vkrama never asked podman to create"
        states = [c.state for c in engine.containers({"vkrama.role": "serve"})
                  if c.name in serve_containers(engine)]  # fmt: skip
        assert states == ["created"]
        process.send_signal(signum)
        holding_proxy.release.set()
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "Interrupted."
    assert serve_containers(engine) == []


@pytest.fixture(scope="module")
def own_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model no other test serves (its own seed, so its own sha256): `vkrama run`
    reuses a running server of the same model, and this test needs one it starts."""
    seed = int.from_bytes(os.urandom(2), "big") + 1
    return examplemodel.make("tiny", tmp_path_factory.mktemp("own") / "tiny.gguf", seed, None)


def test_sighup_on_an_interactive_run_removes_the_server_it_started(
    own_model: Path,
    engine: Engine,
    no_servers_left: None,  # noqa: F811
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "vkrama", "run", str(own_model), "--backend", "cpu"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        banner = process.stderr.readline()
        assert banner.startswith("Chatting with tiny."), banner
        assert len(serve_containers(engine)) == 1
        process.send_signal(signal.SIGHUP)  # the terminal went away
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert serve_containers(engine) == []


def test_rm_of_a_model_a_server_uses_is_refused_unless_forced(
    vkrama: Vkrama,
    own_model: Path,
    no_servers_left: None,  # noqa: F811
) -> None:
    pulled = vkrama("pull", str(own_model))
    assert pulled.returncode == 0, pulled.stderr
    stored = pulled.stdout.split()[0]
    done = vkrama("serve", stored, "--backend", "cpu", "--port", "auto", "-d")
    assert done.returncode == 0, done.stderr
    name = done.stdout.split()[0]
    try:
        refused = vkrama("rm", stored)
        assert refused.returncode == 19, refused.stderr
        assert refused.stderr.splitlines() == [
            f"Error: {stored} is used by {name}; it could never restart without its model",
            f"Hint: `vkrama stop {name}` first, or `vkrama rm --force {stored}`",
        ]
        assert stored in vkrama("list").stdout  # nothing was removed
        forced = vkrama("rm", "--force", stored)
        assert forced.returncode == 0, forced.stderr
        assert f"Warning: {name} uses {stored} and cannot restart" in forced.stderr
        assert forced.stdout == f"removed {stored}\n"
    finally:
        vkrama("stop", name)
