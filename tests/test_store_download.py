"""The transfer's hashing thread: prefix on disk first, then chunks in order; never hangs."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from vkrama.errors import ExitStatus, VkramaError
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


def test_each_retry_of_a_server_that_never_answers_is_reported(silent_server: str) -> None:
    seen: list[object] = []
    http = Http(retries=2, backoff=0.01, timeout=0.2, on_progress=seen.append)
    with pytest.raises(VkramaError) as caught:
        http.request("GET", silent_server, what="model.gguf")
    assert caught.value.status == ExitStatus.NETWORK
    assert [str(event) for event in seen] == [
        "model.gguf: timed out; retry 1 of 2 in 0.01 s",
        "model.gguf: timed out; retry 2 of 2 in 0.02 s",
    ]


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
    assert done.stderr.splitlines()[:2] == [
        "m.gguf: HTTP 503; retry 1 of 2 in 0.5 s",
        "m.gguf: HTTP 503; retry 2 of 2 in 1 s",
    ]
