"""Ready means warm: `vkrama serve` runs the server once at the batch sizes it will serve
before it says ready, so that the first chat does not compile (issue 26).

End to end on the cpu and vulkan (lavapipe) images with the tiny model; what it costs and
saves in time is measured in benchmarks/serve_first_chat.py, never asserted here.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from engine_fakes import NullEngine

from vkrama.engine import ContainerSpec, ContainerState, ContainerStatus
from vkrama.errors import ExitStatus
from vkrama.serve import containers, session, warm

Vkrama = Callable[..., Any]
LAVAPIPE = ("--backend", "vulkan", "--vk-driver", "lavapipe")
PROMPT = "Tell me about the lighthouse on the hill."


@pytest.mark.parametrize(
    ("command", "sizes"),
    [
        (["llama-server", "--model", "/models/m.gguf"], (512, 2048)),
        (["llama-server", "-ub", "1024", "-b", "4096"], (1024, 4096)),
        (["llama-server", "--ubatch-size", "128", "--batch-size", "256", "-ub", "64"], (64, 256)),
    ],
    ids=["llama-servers-defaults", "short-flags", "long-flags-and-the-last-one-wins"],
)
def test_the_warm_up_runs_at_the_servers_own_batch_sizes(
    command: list[str], sizes: tuple[int, int]
) -> None:
    assert warm.batch_sizes(command) == sizes


@pytest.mark.parametrize(
    ("backend", "warmed"),
    [("cpu", False), ("vulkan", True), ("cuda", True), ("rocm", True), ("oneapi", True)],
)
def test_every_gpu_stack_is_warmed_with_a_whole_ubatch_and_cpu_is_not(
    backend: str, warmed: bool
) -> None:
    assert warm.compiles_on_first_use(backend) == warmed


class DiesOnItsFirstRequest(BaseHTTPRequestHandler):
    """Ready like llama-server, then gone at the warm-up's first request (a crash)."""

    def do_GET(self) -> None:
        if self.path == "/props":
            self.close_connection = True  # no answer: the process died
            return
        listed = {"data": [{"id": "tiny"}]} if self.path == "/v1/models" else {}
        data = json.dumps(listed).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class ExitedEngine(NullEngine):
    """Starts one container, which then reads as exited with a log."""

    def __init__(self) -> None:
        self.removed: list[str] = []

    def run(self, spec: ContainerSpec, secret_values: Mapping[str, str] | None = None) -> str:
        return "c1"

    def state(self, container: str) -> ContainerState:
        return ContainerState(ContainerStatus.EXITED, 139)

    def alive(self, container: str) -> bool:
        return False

    def log_lines(self, container: str) -> Iterator[str]:
        yield "ggml_vulkan: device lost"

    def remove(self, container: str) -> None:
        self.removed.append(container)


def test_a_server_that_dies_while_warmed_up_is_an_exited_container_and_is_removed() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), DiesOnItsFirstRequest)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    spec = ContainerSpec(image="localhost/vkrama/vulkan", command=("llama-server",), name="s")
    engine = ExitedEngine()
    try:
        with pytest.raises(containers.ServerFailed) as caught:
            session.launch(engine, session.Planned(spec, url, "tiny"), timeout=5)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert caught.value.status == ExitStatus.CONTAINER_EXITED
    assert caught.value.message == "llama-server exited while it was warmed up"
    assert caught.value.log_tail == ["ggml_vulkan: device lost"]
    assert engine.removed == ["c1"]


def first_chats(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The server's own timings of two chats of the same prompt, prompt reuse off."""
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 1}
    timings = []
    for _ in range(2):
        answer = requests.post(
            f"{url}/v1/chat/completions", json={**body, "cache_prompt": False}, timeout=300
        )
        answer.raise_for_status()
        timings.append(answer.json()["timings"])
    return timings[0], timings[1]


@pytest.mark.podman
@pytest.mark.slow
@pytest.mark.parametrize(
    ("cells", "sizes"),
    [(("--backend", "cpu"), "16 and 48"), (LAVAPIPE, "16, 48 and 512")],
    ids=["cpu-compiles-nothing-and-gets-no-whole-ubatch", "lavapipe-gets-every-batch-size"],
)
def test_the_first_chat_after_ready_finds_the_server_warm(
    cells: tuple[str, ...], sizes: str, vkrama: Vkrama, tiny_model: Path
) -> None:
    done = vkrama("-v", "serve", str(tiny_model), *cells, "--port", "auto", "-d",
                  "--timeout", "600")  # fmt: skip
    assert done.returncode == 0, done.stderr
    name, url = done.stdout.split()
    try:
        (said,) = [line for line in done.stderr.splitlines() if "warmed up" in line]
        assert said.startswith("warmed up in ")
        assert said.endswith(f": short chats and prompts of {sizes} tokens")
        # The server's own record: before any chat of ours, every slot had run the warm-up.
        slots = requests.get(f"{url}/slots", timeout=10).json()
        assert len(slots) > 1 and all("id_task" in slot for slot in slots), slots
        first, second = first_chats(url)
        # The warm-up left no prefix for the first chat to skip: both computed all of it.
        assert first["cache_n"] == second["cache_n"] == 0
        assert first["prompt_n"] == second["prompt_n"] > 0
        ratio = first["prompt_ms"] / second["prompt_ms"]
        print(f"{cells}: first chat prompt_ms {first['prompt_ms']:.1f}, "
              f"second {second['prompt_ms']:.1f}, ratio {ratio:.2f}")  # fmt: skip
        if "vulkan" in cells:
            # What the warm-up compiled is kept on the mounted cache, for the next start.
            kept = Path(os.environ["VKRAMA_HOME"]) / "cache" / "mesa"
            assert any(path.is_file() for path in kept.rglob("*"))
    finally:
        vkrama("stop", name)


@pytest.mark.podman
@pytest.mark.slow
def test_a_server_of_embeddings_is_ready_unwarmed_and_says_why(
    vkrama: Vkrama, tiny_model: Path
) -> None:
    # `--embedding` after `--` reaches llama-server, which then serves embeddings only.
    done = vkrama("serve", str(tiny_model), *LAVAPIPE, "--port", "auto", "-d",
                  "--timeout", "600", "--", "--embedding")  # fmt: skip
    assert done.returncode == 0, done.stderr
    name, url = done.stdout.split()
    try:
        (line,) = [line for line in done.stderr.splitlines() if "warm" in line]
        assert line == "not warmed up: --embedding: the server answers no chats to warm it with"
        assert requests.get(f"{url}/health", timeout=10).status_code == 200
    finally:
        vkrama("stop", name)
