"""The downloader's hashing thread: prefix on disk first, then chunks in order; never hangs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vkrama.store import download
from vkrama.store.download import _Hasher


@pytest.mark.parametrize(
    ("prefix", "chunks"),
    [
        pytest.param(0, [b"GGUF", b"more"], id="a-fresh-download-hashes-only-the-chunks"),
        pytest.param(10, [b"tail"], id="a-resumed-download-hashes-the-prefix-first"),
        pytest.param(3 * download.CHUNK + 5, [os.urandom(download.CHUNK)] * 3,
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
    hasher = _Hasher(part, prefix)
    for chunk in chunks:
        hasher.feed(chunk)
    assert hasher.hexdigest() == hashlib.sha256(on_disk + b"".join(chunks)).hexdigest()
    hasher.close()  # after hexdigest: a no-op


def test_more_chunks_than_the_queue_holds_after_a_failure_never_block(tmp_path: Path) -> None:
    part = tmp_path / "m.part"
    part.write_bytes(b"short")
    hasher = _Hasher(part, 100)  # claims more than the file has: the thread fails at once
    for _ in range(download.QUEUED * 3):
        hasher.feed(b"x" * 4096)
    with pytest.raises(OSError, match="shrank"):
        hasher.hexdigest()


def test_close_ends_the_thread_while_it_still_hashes_the_prefix(tmp_path: Path) -> None:
    part = tmp_path / "m.part"
    size = 64 * download.CHUNK
    with open(part, "wb") as f:
        f.truncate(size)  # sparse: cheap to make, still hashed block by block
    hasher = _Hasher(part, size)
    hasher.feed(b"never hashed")
    hasher.close()
    assert not hasher.thread.is_alive()
