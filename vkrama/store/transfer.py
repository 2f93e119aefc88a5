"""One stream's transfer: what a source wants fetched, a response body into a file, and the
sha256 of that file computed while the bytes arrive.

Stage: store (source ─► verified file in partial/), shared by `download` (one stream) and
`ranges` (several). sha256 runs in a worker thread while the next bytes arrive (hashlib
releases the GIL), so a pull costs about max(network, hashing) rather than their sum. Over
plain http the kernel moves the body from the socket to the file (store/splice.py) and
sha256 reads it back from the page cache; otherwise (TLS, chunked) the body is read with
`readinto` into a few preallocated buffers that the hashing thread hands back, so no
per-chunk bytes are made. Must not print; sends no requests of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

from vkrama.store.hf_cache import CacheSlot
from vkrama.store.splice import ConnectionLost, socket_error, spliced, write_all

MAPPED = 4 << 20  # most bytes hashed from one mapping of the file (close() waits for that)
CHUNK = 1 << 20  # large reads: fewer Python-level steps per GiB (64 KiB cost ~17k of them)
QUEUED = 8  # buffers the hasher may lag behind the socket (memory: QUEUED x CHUNK)
RESET_AFTER = 1 << 20  # bytes of progress that forgive earlier failures


@dataclass(frozen=True)
class RemoteFile:
    """One file a source wants fetched."""

    filename: str
    url: str
    sha256: str | None = None  # published digest, verified when given
    size: int | None = None  # published size
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold a token
    local: Path | None = None  # already on disk (e.g. in the Hugging Face cache): no download
    hf_slot: CacheSlot | None = None  # where the verified file also goes in the HF cache


def copy_body(response: requests.Response, fd: int, hasher: Hasher, have: int) -> Iterator[int]:
    """Write the rest of `response`'s body to `fd` (which holds `have` bytes) and hash it;
    yield the bytes held after each chunk."""
    kernel = spliced(response)
    if kernel is not None:  # plain http: the kernel moves the bytes, we hash them back
        with kernel:
            while count := kernel.into(fd, CHUNK):
                have += count
                hasher.upto(have)  # from the page cache, where the bytes just went
                yield have
        return
    readinto = body_reader(response)
    while True:
        buffer = hasher.buffer()
        view = memoryview(buffer)
        count = readinto(view)
        if not count:
            hasher.give_back(buffer)
            return
        write_all(fd, view[:count])
        hasher.feed(view[:count], buffer)  # the hasher hands the buffer back when done
        have += count
        yield have


def body_reader(response: requests.Response) -> Callable[[memoryview], int]:
    """`readinto` for a response's body: 0 at its end; socket failures as ConnectionLost.

    Straight from http.client when nothing has to be decoded: the kernel copies the bytes
    into our buffer and no Python object is made per chunk (requests' iter_content makes
    one bytes per chunk and urllib3 copies them once more). It honours Content-Length and
    chunked encoding; a connection that ends early is a ConnectionLost.
    """
    fp = getattr(response.raw, "_fp", None)
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if isinstance(fp, http.client.HTTPResponse) and encoding in ("", "identity"):
        direct = fp.readinto

        def readinto(view: memoryview) -> int:
            try:
                count = direct(view)
            except OSError as exc:  # the socket side only
                raise socket_error(exc) from exc
            except http.client.HTTPException as exc:
                raise ConnectionLost(f"{type(exc).__name__}: {exc}") from exc
            if not count and view and fp.length:  # http.client's readinto does not say
                raise ConnectionLost(f"connection closed {fp.length} bytes early")
            return count

        return readinto
    chunks = response.iter_content(CHUNK)  # a server that compresses anyway: let urllib3 decode
    pending = memoryview(b"")

    def decoded(view: memoryview) -> int:
        nonlocal pending
        if not pending:
            pending = memoryview(next(chunks, b""))
        count = min(len(view), len(pending))
        view[:count] = pending[:count]
        pending = pending[count:]
        return count

    return decoded


class Hasher:
    """sha256 of a file, in a thread: its first bytes from disk, then chunks in the order fed.

    Items are hashed in order: `upto(n)` (and `prefix`) hashes the file on disk up to byte n
    (a resumed download's earlier bytes, or what parallel streams have finished); `feed`
    hashes a chunk in memory and, when it came from `buffer()`, hands that buffer back. The
    few buffers (`buffers` x CHUNK) bound memory when hashing is the slower side: `buffer()`
    waits for one. `close()` ends the thread whatever happened; `hexdigest()` waits for it.
    """

    def __init__(self, part: Path, prefix: int, buffers: int = 0) -> None:
        self.digest = hashlib.sha256()
        self.queue: queue.Queue[tuple[memoryview | bytes, bytearray | None] | int | None]
        self.queue = queue.Queue()  # bounded by the buffers, not by the queue
        self.free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(buffers):
            self.free.put(bytearray(CHUNK))
        self.error: BaseException | None = None
        self.stopped = False
        self.hashed = 0  # bytes of the file hashed (read by the thread only)
        self.thread = threading.Thread(
            target=self._run, args=(part,), name="vkrama-sha256", daemon=True
        )
        self.thread.start()
        if prefix:
            self.upto(prefix)

    def buffer(self) -> bytearray:
        return self.free.get()

    def give_back(self, buffer: bytearray) -> None:
        self.free.put(buffer)

    def feed(self, chunk: memoryview | bytes, buffer: bytearray | None = None) -> None:
        self.queue.put((chunk, buffer))

    def upto(self, end: int) -> None:
        self.queue.put(end)

    def hexdigest(self) -> str:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.digest.hexdigest()

    def close(self) -> None:
        if self.thread.is_alive():
            self.stopped = True  # skip the rest of the file: nobody wants this digest
            self.queue.put(None)
            self.thread.join()

    def _run(self, part: Path) -> None:
        with contextlib.ExitStack() as held:
            source: int | None = None
            # Always drain to the end, so a producer never waits on a buffer that is not
            # handed back.
            while (item := self.queue.get()) is not None:
                if isinstance(item, tuple):
                    chunk, buffer = item
                    if self.error is None and not self.stopped:
                        self.digest.update(chunk)
                        self.hashed += len(chunk)
                    if buffer is not None:
                        self.free.put(buffer)
                    continue
                try:
                    if source is None:
                        source = held.enter_context(open(part, "rb", buffering=0)).fileno()
                    while self.hashed < item and self.error is None and not self.stopped:
                        self._hash_mapped(source, min(item, self.hashed + MAPPED))
                except BaseException as exc:  # handed to hexdigest()'s caller
                    self.error = self.error or exc

    def _hash_mapped(self, fd: int, stop: int) -> None:
        """Hash the file's bytes up to `stop` in place, mapped from the page cache: a read
        would copy each byte once more (profiled: that copy cost as much as the write)."""
        start = self.hashed - self.hashed % mmap.ALLOCATIONGRANULARITY
        if os.fstat(fd).st_size < stop:  # a mapped byte past the end would be a SIGBUS
            raise OSError("the partial file shrank while it was being hashed")
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # no fault per page
        with (
            mmap.mmap(fd, stop - start, flags=flags, prot=mmap.PROT_READ, offset=start) as mapped,
            memoryview(mapped) as whole,
            whole[self.hashed - start :] as view,
        ):
            self.digest.update(view)
        self.hashed = stop
