"""A response body moved from the socket to the file by the kernel (Linux splice(2)).

Stage: store (source ─► verified file in partial/), the fast path of download.py's one
stream and of each stream of ranges.py. A body read into Python is copied twice per byte
(socket → our buffer → page cache); spliced through a pipe it is copied once, socket pages
→ page cache, and the hashing thread reads it back from the page cache. On a small machine
the copy saved is most of the CPU a download costs besides sha256.

Only for what the kernel can pass through untouched: plain http (TLS must be decrypted in
user space), a body of known length that is not chunked and not compressed, on a system
with os.splice. Everything else returns None and is read the ordinary way. Socket
failures surface as `ConnectionLost` (as from transfer.body_reader), file failures (a full
disk) as the OSError they are. Must not print.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import http.client
import os
import select
import socket
from types import TracebackType

import requests

PIPE = 1 << 20  # the pipe's capacity: bytes moved per pair of splice calls
# Never block in splice: a full pipe would wait forever for the reader that we are. The
# socket's timeout is kept by polling (a socket with a timeout is non-blocking anyway).
FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK if hasattr(os, "splice") else 0


class ConnectionLost(Exception):
    """The connection under a body that vkrama reads itself (http.client's readinto, splice)
    failed: `lost` says how, in words without headers; `timed_out` when no byte came in
    time. The transfers retry it and http.reason words it as it does requests' own
    exceptions. (Here, below http.py, transfer.py, download.py and ranges.py, as all of
    them meet it.)"""

    def __init__(self, lost: str, *, timed_out: bool = False) -> None:
        super().__init__(lost)
        self.lost = lost
        self.timed_out = timed_out


class Spliced:
    """The rest of one response's body, moved into a file descriptor by the kernel."""

    def __init__(self, fp: http.client.HTTPResponse, sock: socket.socket, length: int) -> None:
        self.fp = fp
        self.sock = sock
        self.remaining = length  # body bytes not yet in the file
        self.timeout = sock.gettimeout()
        self.drained = False  # whether http.client's buffer has been emptied
        self.to_file = True  # False once the file refused splice (EINVAL): copy instead
        self.read_end, self.write_end = os.pipe2(os.O_CLOEXEC)
        # A larger pipe moves more per call; the default 64 KiB works too (pipe-max-size).
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.write_end, fcntl.F_SETPIPE_SZ, PIPE)

    def __enter__(self) -> Spliced:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        os.close(self.read_end)
        os.close(self.write_end)
        self.fp.length = self.remaining  # what http.client would have left to read
        if not self.remaining:
            # As http.client does at a body's end: the response is done and the connection
            # may carry the next request (ranges.py hands it back to the pool).
            self.fp.close()

    def into(self, fd: int, limit: int, offset: int | None = None) -> int:
        """Move up to `limit` bytes of the body to `fd`, at `offset` or else at its position;
        0 at the body's end."""
        want = min(limit, self.remaining)
        if not want:
            return 0
        head = b"" if self.drained else self._buffered(want)
        if head:  # what http.client read past the headers: written the ordinary way
            write_all(fd, memoryview(head), offset)
            self.remaining -= len(head)
            return len(head)
        moved = self._fill(want)
        left = moved
        while left:  # the pipe holds `moved` bytes: all of them go to the file
            at = None if offset is None else offset + moved - left
            if self.to_file:
                try:
                    left -= os.splice(self.read_end, fd, left, offset_dst=at)
                    continue
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise  # a full disk, an I/O error: the caller's to report
                    self.to_file = False  # a file (system) splice cannot write to
            piece = os.read(self.read_end, left)
            write_all(fd, memoryview(piece), at)
            left -= len(piece)
        self.remaining -= moved
        return moved

    def _buffered(self, want: int) -> bytes:
        """Bytes of the body that http.client's buffered reader took in with the headers."""
        reader = self.fp.fp
        if reader is None:
            raise ConnectionLost("the connection was closed")
        try:
            # With bytes held, peek returns them without reading; with none it reads the
            # socket once (at most its buffer's size), which is a read we needed anyway.
            held = reader.peek(1)
        except OSError as exc:
            raise socket_error(exc) from exc
        take = min(len(held), want)
        self.drained = take == len(held)
        return reader.read(take) if take else b""

    def _fill(self, want: int) -> int:
        """Splice from the socket into the empty pipe: at least one byte, at most `want`,
        without waiting once something has come."""
        moved = 0
        while moved < want:
            try:
                count = os.splice(self.sock.fileno(), self.write_end, want - moved, flags=FLAGS)
            except BlockingIOError:
                # The pipe is full (it counts pages, and a page may hold less than 4 KiB),
                # or the socket has nothing yet: drain what came, or wait for the socket.
                if moved:
                    break
                self._wait()
                continue
            except OSError as exc:
                raise socket_error(exc) from exc
            if not count:
                if moved:
                    break
                raise ConnectionLost(f"connection closed {self.remaining} bytes early")
            moved += count
        return moved

    def _wait(self) -> None:
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        timeout_ms = None if self.timeout is None else int(self.timeout * 1000)
        if not poller.poll(timeout_ms):
            raise ConnectionLost(f"no data for {self.timeout} s", timed_out=True)


def write_all(fd: int, view: memoryview, offset: int | None = None) -> None:
    """Write every byte of `view` (at `offset`, if given): a write may take fewer."""
    while view:
        done = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[done:]
        if offset is not None:
            offset += done


def spliced(response: requests.Response) -> Spliced | None:
    """A kernel path for the rest of `response`'s body, or None where it must be read."""
    if not hasattr(os, "splice") or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return None
    fp = getattr(response.raw, "_fp", None)
    if not isinstance(fp, http.client.HTTPResponse) or fp.chunked or fp.length is None:
        return None
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        return None
    sock = getattr(getattr(fp.fp, "raw", None), "_sock", None)
    if type(sock) is not socket.socket:  # an ssl.SSLSocket (https) must decrypt in Python
        return None
    return Spliced(fp, sock, fp.length)


def socket_error(exc: OSError) -> ConnectionLost:
    """What a failed socket read lost, for the download's retries."""
    if isinstance(exc, TimeoutError):
        return ConnectionLost(str(exc), timed_out=True)
    return ConnectionLost(f"{type(exc).__name__}: {exc}")
