"""Parallel ranged downloads: one large file as several HTTP range streams into one partial file.

Stage: store (source ─► verified file in partial/), called by `download.fetch` when a
server answers a first short range (download.PROBE) with 206 for a file of PARALLEL_FROM
bytes or more; builds on store/http.py (the session, its retries, the failures' wording)
and store/transfer.py (the body reader, the hasher), never on download.py. Hubs and CDNs
cap each connection; several connections multiply what one gets.

The file is cut into segments (at most SEGMENT bytes, at least two per stream) that
`models.streams` threads take in order; each thread reads its segment's body straight into
its own buffer and writes it at its offset (pwrite), so memory is one buffer per stream. The
partial file is preallocated (a full disk fails before any byte is fetched), and the bytes
done of every segment are kept in KEY.ranges beside KEY.part: rewritten at the end of each
segment and every SAVE_EVERY seconds, so a `kill -9` loses at most what each stream fetched
of its current segment since then. sha256 runs in the download's hashing thread over the
finished prefix of the file as it grows (read back from the page cache), so it overlaps the
transfer as with one stream. A server that stops answering ranges mid-way (a 200, or a 206
for other bytes) gets one stream from the finished prefix; one whose file changed (another
size or ETag) starts over. Must not print, and must never log or show request headers.
Over 300 lines because the record, the streams and their retries are one protocol.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from vkrama.progress import Download, Reporter
from vkrama.store.http import Http, network_error, reason
from vkrama.store.splice import ConnectionLost, spliced, write_all
from vkrama.store.transfer import CHUNK, RESET_AFTER, Hasher, RemoteFile, body_reader

PARALLEL_FROM = 32 << 20  # smaller files gain little from more connections
SEGMENT = 16 << 20  # most a stream fetches per request, and re-fetches after a kill -9
MIB = 1 << 20
SAVE_EVERY = 0.1  # seconds between records of each segment's progress (a rename: cheap)
VERSION = 1
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class _NoRanges(Exception):
    """The server answered a range request with something else (200, another range)."""


class _Changed(Exception):
    """The server's file is not the one the partial file holds the start of."""


@dataclass
class _State:
    size: int
    segment: int
    done: list[int]  # bytes done of each segment, from its start
    validator: str  # the file's ETag when the download began ("" if none)

    def length(self, k: int) -> int:
        return min(self.segment, self.size - k * self.segment)

    def prefix(self) -> int:
        """Bytes from the start of the file that are all there."""
        for k, done in enumerate(self.done):
            if done < self.length(k):
                return k * self.segment + done
        return self.size


def segment_size(size: int, streams: int) -> int:
    """Bytes per segment: at most SEGMENT, at least two segments per stream (so that every
    stream stays busy to the end), in whole MiB."""
    per = -(-size // (2 * max(1, streams)))
    return max(MIB, min(SEGMENT, -(-per // MIB) * MIB))


def state_path(part: Path) -> Path:
    return part.with_suffix(".ranges")


def discard(part: Path) -> None:
    """Remove a partial file and its record of ranges."""
    part.unlink(missing_ok=True)
    state_path(part).unlink(missing_ok=True)


def worth_it(http: Http, remote: RemoteFile, response: requests.Response) -> bool:
    """Whether the answer to the probe allows a ranged download worth having."""
    if http.streams < 2 or response.status_code != 206:
        return False
    answered = _content_range(response)
    if answered is None or answered[0] != 0:
        return False
    size = answered[2]
    return size >= PARALLEL_FROM and remote.size in (None, size)


def start(
    http: Http,
    remote: RemoteFile,
    part: Path,
    response: requests.Response,
    on_progress: Reporter,
) -> str | None:
    """Fetch `remote` as ranges, `response` (206 to the probe) serving the first; return the
    sha256, or None when the server stopped answering ranges (the finished prefix is kept
    in `part` for one stream to go on from)."""
    answered = _content_range(response)
    assert answered is not None
    size = answered[2]
    segment = segment_size(size, http.streams)
    count = -(-size // segment)
    state = _State(size, segment, [0] * count, _validator(response))
    # The record first: a full-size part file without one would read as one stream's bytes.
    _save(part, state)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _preallocate(fd, size)
    finally:
        os.close(fd)
    return _Download(http, remote, part, state, on_progress).run(response)


def resume(http: Http, remote: RemoteFile, part: Path, on_progress: Reporter) -> str | None:
    """Go on with a ranged download a killed or failed pull left; None when there is none
    (or the server no longer answers ranges: then `part` holds the finished prefix)."""
    state = _load(part)
    if state is None:
        return None
    return _Download(http, remote, part, state, on_progress).run(None)


class _Download:
    def __init__(
        self,
        http: Http,
        remote: RemoteFile,
        part: Path,
        state: _State,
        on_progress: Reporter,
    ) -> None:
        self.http = http
        self.remote = remote
        self.part = part
        self.state = state
        self.on_progress = on_progress
        self.lock = threading.Lock()  # the next segment, the first failure, saving
        self.next = 0
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.failure: BaseException | None = None

    def run(self, first: requests.Response | None) -> str | None:
        state = self.state
        resumed_from = sum(state.done)
        pending = sum(1 for k in range(len(state.done)) if state.done[k] < state.length(k))
        hasher = Hasher(self.part, 0)
        hashed_to = 0
        fd = os.open(self.part, os.O_WRONLY)
        if first is not None:
            self.next = 1  # segment 0 is the first answer's
        workers = [
            threading.Thread(
                target=self._worker,
                args=(self.http if i == 0 else self.http.another(), fd, first if i == 0 else None),
                name=f"vkrama-range-{i}",
                daemon=True,
            )
            for i in range(max(1, min(self.http.streams, pending)))
        ]
        try:
            for worker in workers:
                worker.start()
            saved = time.monotonic()
            while any(worker.is_alive() for worker in workers):
                self.wake.wait(0.1)
                self.wake.clear()
                prefix = state.prefix()
                if prefix > hashed_to:
                    hasher.upto(prefix)
                    hashed_to = prefix
                done = sum(state.done)
                self.on_progress(Download(self.remote.filename, done, state.size, resumed_from))
                if time.monotonic() - saved >= SAVE_EVERY:
                    self.save()
                    saved = time.monotonic()
        except BaseException:
            hasher.close()
            raise
        finally:
            self.stop.set()
            for worker in workers:
                worker.join()
            os.close(fd)
            if self.failure is None or isinstance(self.failure, Exception):
                self.save()  # what finished is kept for the next pull (a no-op once removed)
        if self.failure is not None:
            hasher.close()
            return self._after(self.failure)
        hasher.upto(state.size)
        sha256 = hasher.hexdigest()
        state_path(self.part).unlink()  # the part is whole: a later pull finds it complete
        return sha256

    def _after(self, failure: BaseException) -> str | None:
        if isinstance(failure, _NoRanges):
            # One stream takes over from the finished prefix: cut the file there, then drop
            # the record (in this order: a part without record is one stream's bytes).
            os.truncate(self.part, self.state.prefix())
            state_path(self.part).unlink()
            return None
        if isinstance(failure, _Changed):
            discard(self.part)
            return None
        raise failure

    def save(self) -> None:
        with self.lock:
            if not state_path(self.part).exists():
                return  # removed: the download is over
            _save(self.part, self.state)

    def _take(self) -> int | None:
        with self.lock:
            state = self.state
            while self.next < len(state.done) and state.done[self.next] >= state.length(self.next):
                self.next += 1
            if self.next == len(state.done):
                return None
            self.next += 1
            return self.next - 1

    def _worker(self, http: Http, fd: int, first: requests.Response | None) -> None:
        buffer = memoryview(bytearray(CHUNK))
        try:
            k = 0 if first is not None else self._take()
            while k is not None and not self.stop.is_set():
                self._segment(http, fd, k, buffer, first)
                first = None
                self.save()  # a finished segment is never fetched again
                self.wake.set()
                k = self._take()
        except BaseException as exc:  # the first failure ends the download; run() raises it
            with self.lock:
                self.failure = self.failure or exc
            self.stop.set()
            self.wake.set()

    def _segment(
        self,
        http: Http,
        fd: int,
        k: int,
        buffer: memoryview,
        response: requests.Response | None,
    ) -> None:
        state, remote = self.state, self.remote
        begin, length = k * state.segment, state.length(k)
        failures = 0
        mark = state.done[k]
        while state.done[k] < length and not self.stop.is_set():
            offset = begin + state.done[k]
            try:
                if response is None:
                    headers = {
                        **remote.headers,
                        "Accept-Encoding": "identity",
                        "Range": f"bytes={offset}-{begin + length - 1}",
                    }
                    response = http.request(
                        "GET", remote.url, headers, what=remote.filename, stream=True
                    )
                with response:
                    last = self._check(response, offset)
                    end = min(begin + length, last + 1)  # the first answer covers PROBE bytes
                    with _body_into(response, buffer) as into:
                        while begin + state.done[k] < end and not self.stop.is_set():
                            offset = begin + state.done[k]
                            count = into(fd, min(CHUNK, end - offset), offset)
                            if not count:
                                raise ConnectionLost(f"range ended at {offset}")
                            state.done[k] += count  # after the write: the record never runs ahead
                    if begin + state.done[k] == last + 1:
                        _keep_alive(response)
            except (requests.RequestException, ConnectionLost) as exc:
                # A connection that keeps delivering is worth following; one that stalls is not.
                failures = 1 if state.done[k] - mark >= RESET_AFTER else failures + 1
                mark = state.done[k]
                if failures > http.retries:
                    raise network_error(remote.filename, exc, sum(state.done)) from None
                http.sleep(failures - 1, remote.filename, reason(exc))
            finally:
                response = None

    def _check(self, response: requests.Response, offset: int) -> int:
        """The last byte the answer holds, if it is the range asked for of the same file."""
        answered = _content_range(response) if response.status_code == 206 else None
        if answered is None or answered[0] != offset:
            raise _NoRanges(f"asked for bytes from {offset}, got HTTP {response.status_code}")
        validator = _validator(response)
        if answered[2] != self.state.size or (
            self.state.validator and validator and validator != self.state.validator
        ):
            raise _Changed()
        return answered[1]


@contextlib.contextmanager
def _body_into(
    response: requests.Response, buffer: memoryview
) -> Iterator[Callable[[int, int, int], int]]:
    """`into(fd, most, offset)`: the body's next bytes (up to `most`) written at `offset`.
    Plain http goes socket → file in the kernel (store/splice.py); anything else is read
    into this stream's `buffer` and written from there."""
    kernel = spliced(response)
    if kernel is not None:
        with kernel:
            yield kernel.into
        return
    readinto = body_reader(response)

    def into(fd: int, most: int, offset: int) -> int:
        count = readinto(buffer[:most])
        write_all(fd, buffer[:count], offset)
        return count

    yield into


def _keep_alive(response: requests.Response) -> None:
    """Hand the connection back to the pool when its body was read to the end, so the next
    segment reuses it (no new TCP or TLS handshake); requests would otherwise close it, as
    it did not read the body itself."""
    fp = getattr(response.raw, "_fp", None)
    release = getattr(response.raw, "release_conn", None)
    if fp is not None and fp.isclosed() and release is not None:
        release()


def _content_range(response: requests.Response) -> tuple[int, int, int] | None:
    match = CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match is None:
        return None
    first, last, size = (int(g) for g in match.groups())
    return (first, last, size) if first <= last < size else None


def _validator(response: requests.Response) -> str:
    etag = response.headers.get("ETag", "")
    return "" if etag.startswith("W/") else etag  # a weak ETag says nothing about bytes


def _preallocate(fd: int, size: int) -> None:
    """Reserve the file's blocks now, so a full disk fails before any byte is fetched."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
    os.ftruncate(fd, size)  # sparse: a full disk shows at a write instead


def _save(part: Path, state: _State) -> None:
    # Replaced whole by a rename. No fsync: the record only has to survive the process (a
    # kill -9), as the part file's bytes do; after a power loss neither is trusted more.
    path = state_path(part)
    tmp = path.with_name(f".{path.name}.tmp")
    record = {
        "version": VERSION,
        "size": state.size,
        "segment": state.segment,
        "validator": state.validator,
        "done": state.done,
    }
    try:
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load(part: Path) -> _State | None:
    """The record beside `part` if it describes it; a record that does not is removed with
    the part (its bytes cannot be told from preallocated zeros)."""
    path = state_path(part)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        record = None
    state = _parse(record)
    if state is None or not part.is_file() or part.stat().st_size != state.size:
        discard(part)
        return None
    return state


def _parse(record: object) -> _State | None:
    if not isinstance(record, dict) or record.get("version") != VERSION:
        return None
    try:
        state = _State(
            int(record["size"]), int(record["segment"]), [int(d) for d in record["done"]],
            str(record["validator"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None
    if state.segment <= 0 or len(state.done) != -(-state.size // state.segment):
        return None
    if not all(0 <= done <= state.length(k) for k, done in enumerate(state.done)):
        return None
    return state
