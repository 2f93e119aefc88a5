"""The transfer's hashing thread: prefix on disk first, then chunks in order; never hangs."""

from __future__ import annotations

import email.utils
import hashlib
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from store_servers import LoopbackServer, Resource

from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import Event, Retry
from vkrama.store import transfer
from vkrama.store.http import Http
from vkrama.store.transfer import Hasher


@pytest.mark.parametrize(
    ("prefix", "chunks"),
    [
        pytest.param(0, [b"GGUF", b"more"], id="a-fresh-download-hashes-only-the-chunks"),
        pytest.param(10, [b"tail"], id="a-resumed-download-hashes-the-prefix-first"),
        pytest.param(3 * transfer.CHUNK + 5, [os.urandom(transfer.CHUNK)] * 3,
                     id="a-prefix-of-several-reads-then-full-chunks"),
        pytest.param(7, [], id="nothing-new-after-the-prefix"),
    ],
)  # fmt: skip
def test_the_digest_is_of_the_prefix_then_the_chunks(
    tmp_path: Path, prefix: int, chunks: list[bytes]
) -> None:
    part = tmp_path / "m.part"
    on_disk = os.urandom(prefix)
    part.write_bytes(on_disk + b"bytes after the prefix are not hashed")
    hasher = Hasher(part, prefix)
    for chunk in chunks:
        hasher.feed(chunk)
    assert hasher.hexdigest() == hashlib.sha256(on_disk + b"".join(chunks)).hexdigest()
    hasher.close()  # after hexdigest: a no-op


def test_more_chunks_than_the_queue_holds_after_a_failure_never_block(tmp_path: Path) -> None:
    part = tmp_path / "m.part"
    part.write_bytes(b"short")
    hasher = Hasher(part, 100)  # claims more than the file has: the thread fails at once
    for _ in range(transfer.QUEUED * 3):
        hasher.feed(b"x" * 4096)
    with pytest.raises(OSError, match="shrank"):
        hasher.hexdigest()


def test_close_ends_the_thread_while_it_still_hashes_the_prefix(tmp_path: Path) -> None:
    part = tmp_path / "m.part"
    size = 64 * transfer.CHUNK
    with open(part, "wb") as f:
        f.truncate(size)  # sparse: cheap to make, still hashed block by block
    hasher = Hasher(part, size)
    hasher.feed(b"never hashed")
    hasher.close()
    assert not hasher.thread.is_alive()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/model.gguf"


def retries_into(seen: list[Retry]) -> Callable[[Event], None]:
    return lambda event: seen.append(event) if isinstance(event, Retry) else None


def test_each_retry_of_a_server_that_never_answers_is_reported(silent_server: str) -> None:
    seen: list[Retry] = []
    http = Http(retries=2, backoff=0.01, timeout=0.2, on_progress=retries_into(seen))
    with pytest.raises(VkramaError) as caught:
        http.request("GET", silent_server, what="model.gguf")
    assert caught.value.status == ExitStatus.NETWORK
    assert [(e.what, e.reason, e.attempt, e.retries) for e in seen] == [
        ("model.gguf", "timed out", 1, 2),
        ("model.gguf", "timed out", 2, 2),
    ]
    # 0.01 s then 0.02 s, each up to half again as long (jitter)
    assert 0.01 <= seen[0].wait_s <= 0.015 and 0.02 <= seen[1].wait_s <= 0.03


class Unavailable(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_pull_says_what_it_retries_when_stderr_is_not_a_terminal(
    vkrama: Callable[..., Any],
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/m.gguf"
        done = vkrama("pull", url, env={"VKRAMA_MODELS_RETRIES": "2"})
    finally:
        server.shutdown()
    assert done.returncode == ExitStatus.NETWORK, done.stderr
    first, second = done.stderr.splitlines()[:2]
    # 0.5 s then 1 s, each up to half again as long (jitter)
    assert re.fullmatch(r"m\.gguf: HTTP 503; retry 1 of 2 in 0\.(5\d?|6\d?|7[0-5]?) s", first)
    assert re.fullmatch(r"m\.gguf: HTTP 503; retry 2 of 2 in 1(\.\d\d?)? s", second)
    assert float(second.split(" in ")[1][:-2]) <= 1.5


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [
        pytest.param(429, "1", id="429-in-seconds"),
        pytest.param(503, "1", id="503-in-seconds"),
        # An HTTP-date 2 s ahead, to the second: 1 to 2 s from when the client reads it.
        pytest.param(503, "date", id="503-as-an-http-date"),
    ],
)
def test_a_server_that_says_when_to_come_back_is_waited_for(status: int, retry_after: str) -> None:
    with LoopbackServer() as server:
        if retry_after == "date":
            retry_after = email.utils.formatdate(time.time() + 2, usegmt=True)
        url = server.add(
            "/m.gguf", Resource(b"GGUF", first=[(status, {"Retry-After": retry_after})])
        )
        seen: list[Retry] = []
        # A backoff of 10 ms: only the Retry-After can explain a wait of a second.
        http = Http(retries=2, backoff=0.01, on_progress=retries_into(seen))
        with http.request("GET", url, what="m.gguf") as response:
            assert response.content == b"GGUF"
    assert len(server.arrivals) == 2
    assert server.arrivals[1] - server.arrivals[0] >= 1.0  # the server saw the client wait
    assert [(e.reason, e.attempt) for e in seen] == [(f"HTTP {status}", 1)]
    assert seen[0].wait_s >= 1.0


def test_a_server_that_asks_for_too_long_a_wait_fails_the_pull_at_once() -> None:
    with LoopbackServer() as server:
        url = server.add("/m.gguf", Resource(b"GGUF", first=[(429, {"Retry-After": "3600"})]))
        with pytest.raises(VkramaError) as caught:
            Http(retries=2).request("GET", url, what="m.gguf")
    assert len(server.arrivals) == 1
    assert caught.value.status == ExitStatus.NETWORK
    assert (
        str(caught.value)
        == "m.gguf: the server answered HTTP 429 and asks to be asked again in 3600 s"
    )


def test_backoffs_are_jittered_so_failed_streams_do_not_return_together() -> None:
    with LoopbackServer() as server:
        url = server.add("/m.gguf", Resource(b"GGUF", first=[(503, {})] * 4))
        seen: list[Retry] = []
        Http(retries=4, backoff=0.02, on_progress=retries_into(seen)).request("GET", url).close()
    ratios = [e.wait_s / (0.02 * 2**k) for k, e in enumerate(seen)]
    assert len(ratios) == 4
    assert all(1.0 <= r <= 1.5 for r in ratios)  # the backoff, up to half again as long
    assert len(set(ratios)) > 1  # at random: four equal draws of a float do not happen
