"""HTTP for the store: requests with retries and one error mapping, and resumable downloads.

Stage: store (source ─► verified file in partial/). Streams into a partial file, resumes it
with HTTP Range after an interruption or a kill (and starts over when the server ignores
Range), retries transient failures with backoff, and verifies size and sha256. A large file
on a server that answers ranges goes as several streams (store/ranges.py). sha256 runs in a
worker thread while the next bytes arrive (hashlib releases the GIL), so a pull costs about
max(network, hashing) rather than their sum. Over plain http the kernel moves the body
from the socket to the file (store/splice.py) and sha256 reads it back from the page cache;
otherwise (TLS, chunked) the body is read with `readinto` into a few preallocated buffers
that the hashing thread hands back, so no per-chunk bytes are made.
Must not print (progress goes to `on_progress`) and must never log or show request headers:
they carry tokens.
Over 300 lines because retries, resume and hashing share one transfer loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import mmap
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from vkrama import __version__
from vkrama.config import Settings
from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import NULL, Download, Reporter, Retry
from vkrama.store.hf_cache import CacheSlot
from vkrama.store.splice import ConnectionLost, socket_error, spliced, write_all

T = TypeVar("T", dict[str, Any], list[Any])
MAPPED = 4 << 20  # most bytes hashed from one mapping of the file (close() waits for that)
CHUNK = 1 << 20  # large reads: fewer Python-level steps per GiB (64 KiB cost ~17k of them)
QUEUED = 8  # buffers the hasher may lag behind the socket (memory: QUEUED x CHUNK)
PROBE = 1 << 20  # the first request's range when several streams may follow
RESET_AFTER = 1 << 20  # bytes of progress that forgive earlier failures
TRANSIENT = {408, 425, 429, 500, 502, 503, 504}


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


class Http:
    """A requests session with retries, backoff and errors turned into VkramaError."""

    def __init__(
        self,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 30.0,
        verify: bool | str = True,
        insecure: tuple[str, ...] = (),
        on_progress: Reporter = NULL,
        streams: int = 1,
    ) -> None:
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"vkrama/{__version__}"
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.verify = verify  # True (certifi) or a CA bundle; never False
        self.insecure = insecure  # registries allowed plain http (see oci.base_url)
        self.on_progress = on_progress  # gets a Retry before each retry
        self.streams = streams  # connections one large file may use (store/ranges.py)

    @classmethod
    def for_settings(cls, settings: Settings, on_progress: Reporter = NULL) -> Http:
        return cls(
            retries=int(settings["models.retries"]),
            verify=ca_bundle(settings),
            insecure=tuple(settings["models.insecure_registries"]),
            on_progress=on_progress,
            streams=int(settings["models.streams"]),
        )

    def another(self) -> Http:
        """The same settings over a session of its own: one per thread of a ranged download
        (a requests.Session is not meant to be shared between threads)."""
        return Http(self.retries, self.backoff, self.timeout, self.verify, self.insecure,
                    self.on_progress)  # fmt: skip

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        what: str = "",
        stream: bool = False,
        allow_redirects: bool = True,
        ok: tuple[int, ...] = (),
    ) -> requests.Response:
        """Send with retries on transient failures; raise VkramaError on any other failure.

        Statuses in `ok` are returned to the caller instead of raised (e.g. 401 for auth).
        """
        what = what or _shown(url)
        for attempt in range(self.retries + 1):
            try:
                response = self.session.request(
                    method, url, headers=dict(headers or {}), stream=stream,
                    allow_redirects=allow_redirects, timeout=self.timeout, verify=self.verify,
                )  # fmt: skip
            except requests.exceptions.SSLError as exc:
                if untrusted(exc):  # retrying cannot help
                    raise tls_error(url) from None
                if attempt == self.retries:
                    raise network_error(what, exc) from None
                self.sleep(attempt, what, _reason(exc))
                continue
            except requests.RequestException as exc:
                if attempt == self.retries:
                    raise network_error(what, exc) from None
                self.sleep(attempt, what, _reason(exc))
                continue
            if response.status_code in TRANSIENT and attempt < self.retries:
                response.close()
                self.sleep(attempt, what, f"HTTP {response.status_code}")
                continue
            if response.status_code < 400 or response.status_code in ok:
                return response
            response.close()
            raise status_error(what, response.status_code)
        raise AssertionError("unreachable")

    def speaks_tls(self, url: str) -> bool:
        """Whether `url`'s server answers over TLS (one try: a probe, not a transfer)."""
        try:
            self.session.get(url, timeout=min(self.timeout, 5.0), verify=self.verify).close()
        except requests.exceptions.SSLError as exc:
            if untrusted(exc):
                raise tls_error(url) from None
            return False  # it answered, but not in TLS
        except requests.RequestException:
            return False  # nothing there over TLS: plain http will say what is wrong
        return True

    def sleep(self, attempt: int, what: str, reason: str) -> None:
        """Wait before retry number `attempt + 1`, and say so."""
        wait = self.backoff * (2**attempt)
        self.on_progress(Retry(what, reason, attempt + 1, self.retries, wait))
        time.sleep(wait)

    def fetch(self, remote: RemoteFile, part: Path, on_progress: Reporter = NULL) -> str:
        """Download `remote` into `part`, resuming what is there; return the sha256."""
        from vkrama.store import ranges  # it builds on this module

        sha256 = ranges.resume(self, remote, part, on_progress)
        if sha256 is None:  # no ranged download to resume: one stream (which may fan out)
            sha256 = self._transfer(remote, part, on_progress)
        if remote.sha256 is not None and sha256 != remote.sha256.lower():
            raise VkramaError(
                f"checksum mismatch for {remote.filename}: expected sha256 {remote.sha256},"
                f" got {sha256}",
                hint="the source changed or the transfer was corrupted; the file was discarded",
                status=ExitStatus.CHECKSUM,
            )
        return sha256

    def _transfer(self, remote: RemoteFile, part: Path, on_progress: Reporter) -> str:
        from vkrama.store import ranges

        have = part.stat().st_size if part.exists() else 0
        hasher = _Hasher(part, have, QUEUED)  # hashes what is on disk while the rest arrives
        try:
            return self._stream(remote, part, have, hasher, on_progress, ranges)
        finally:
            hasher.close()

    def _stream(
        self,
        remote: RemoteFile,
        part: Path,
        have: int,
        hasher: _Hasher,
        on_progress: Reporter,
        ranges: Any,
    ) -> str:
        resumed_from = have
        failures = 0
        progress_at_failure = have
        # Several streams only for a file that may be large (a known small one costs no
        # probe), and once a server fails at ranges, one stream to the end.
        fan_out = self.streams > 1 and (remote.size or ranges.PARALLEL_FROM) >= ranges.PARALLEL_FROM
        while True:
            headers = {**remote.headers, "Accept-Encoding": "identity"}
            if have:
                headers["Range"] = f"bytes={have}-"
            elif fan_out:
                # A 206 says the server takes ranges, and how large the file is; the probe is
                # short, so nothing is fetched that a stream would fetch again.
                headers["Range"] = f"bytes=0-{PROBE - 1}"
            try:
                response = self.request(
                    "GET", remote.url, headers, what=remote.filename, stream=True, ok=(416,)
                )
                with response:
                    if response.status_code == 416:
                        if remote.size is not None and have != remote.size:
                            raise _short(remote.filename, have, remote.size)
                        break  # we already hold every byte the server has
                    if not have and fan_out and ranges.worth_it(self, remote, response):
                        fan_out = False
                        hasher.close()
                        sha256: str | None = ranges.start(self, remote, part, response, on_progress)
                        if sha256 is not None:
                            return sha256
                        # The server stopped answering ranges: one stream from what is held.
                        have = resumed_from = progress_at_failure = part.stat().st_size
                        hasher = _Hasher(part, have, QUEUED)
                        continue
                    if have and not _continues_at(response, have):
                        # The server ignored Range (or answered another one): start over,
                        # from this body if it is the whole file, else with a plain GET.
                        fan_out = False
                        hasher.close()
                        have, resumed_from = 0, 0
                        hasher = _Hasher(part, 0, QUEUED)
                        if response.status_code != 200:
                            continue
                    total = _total(response, have) or remote.size
                    began = have
                    # Not "ab": splice(2) refuses a file opened for appending.
                    with open(part, "r+b" if have else "wb", buffering=0) as out:
                        out.seek(0, os.SEEK_END)
                        for held in _copy_body(response, out.fileno(), hasher, have):
                            have = held
                            on_progress(Download(remote.filename, have, total, resumed_from))
                    if response.status_code == 206 and total is not None and began < have < total:
                        continue  # the probe's range (or a short one) is done: ask for the rest
                if remote.size is not None and have < remote.size:
                    raise _StreamEnded(have)
                break
            except (requests.RequestException, ConnectionLost, _StreamEnded) as exc:
                # A connection that keeps delivering is worth following; one that stalls is not.
                failures = 1 if have - progress_at_failure >= RESET_AFTER else failures + 1
                progress_at_failure = have
                if failures > self.retries:
                    if remote.size is not None and isinstance(exc, _StreamEnded):
                        raise _short(remote.filename, have, remote.size) from None
                    raise network_error(remote.filename, exc, have) from None
                self.sleep(failures - 1, remote.filename, _reason(exc))
        if remote.size is not None and have != remote.size:
            raise _short(remote.filename, have, remote.size)
        return hasher.hexdigest()


def _copy_body(response: requests.Response, fd: int, hasher: _Hasher, have: int) -> Iterator[int]:
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


class _Hasher:
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


def json_of(response: requests.Response, kind: type[T], what: str, hint: str) -> T:
    """The answer's JSON when it is a `kind` (dict or list); otherwise a NETWORK error, as a
    server answering something else is no source to read names from."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, kind):
        shape = "a JSON object" if kind is dict else "a JSON list"
        raise VkramaError(f"{what} is not {shape}", hint=hint, status=ExitStatus.NETWORK)
    return answer


def ca_bundle(settings: Settings) -> bool | str:
    """The CA bundle to verify TLS with: models.ca_bundle, else the usual variables, else True."""
    configured = str(settings["models.ca_bundle"])
    source = f"models.ca_bundle ({settings.source('models.ca_bundle')})"
    if not configured:
        for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
            if settings.environ.get(var):
                configured, source = settings.environ[var], var
                break
    if not configured:
        return True
    path = Path(configured).expanduser()
    if not path.is_file():
        raise VkramaError(
            f"{source}: CA bundle {path} does not exist",
            hint="point it at a PEM file of the certificates to trust",
            status=ExitStatus.CONFIG,
        )
    return str(path)


def untrusted(exc: Exception) -> bool:
    return "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc)


def tls_error(url: str) -> VkramaError:
    host = urlsplit(url).netloc
    return VkramaError(
        f"{host}: its TLS certificate is not trusted",
        hint="if it is signed by a private CA, set models.ca_bundle (or REQUESTS_CA_BUNDLE)"
        " to that CA's PEM file",
        status=ExitStatus.NETWORK,
    )


def _continues_at(response: requests.Response, have: int) -> bool:
    if response.status_code != 206:
        return False
    content_range = response.headers.get("Content-Range", "")
    return content_range.startswith(f"bytes {have}-")


def _total(response: requests.Response, have: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return have + int(length) if length and length.isdigit() else None


def _shown(url: str) -> str:
    # Never show a query string: pre-signed URLs carry credentials there.
    return url.split("?", 1)[0]


class _StreamEnded(Exception):
    """The server closed a response before the size it announced: retried like a dropped
    connection, reported as INCOMPLETE once the retries are spent."""


def _short(filename: str, have: int, size: int) -> VkramaError:
    return VkramaError(
        f"{filename} is incomplete: the server sent {have} of {size} bytes",
        hint="the source's file is shorter than it announces; try again later",
        status=ExitStatus.INCOMPLETE,
    )


def _reason(exc: Exception) -> str:
    """What went wrong with a request or a body, in words (never its headers: they carry
    tokens): requests' own exceptions and the ConnectionLost of the bodies vkrama reads."""
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed"
    if isinstance(exc, ConnectionLost):
        return "timed out" if exc.timed_out else "connection failed or dropped"
    if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        return "connection failed or dropped"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return type(exc).__name__


def network_error(what: str, exc: Exception, have: int | None = None) -> VkramaError:
    kept = f" ({have} bytes kept; pulling again resumes)" if have else ""
    reason = _reason(exc)
    hint = "check the network or the endpoint setting, then pull again"
    if isinstance(exc, requests.exceptions.SSLError):
        hint = "a registry that speaks plain http must be listed in models.insecure_registries"
    return VkramaError(
        f"download of {what} failed: {reason}{kept}", hint=hint, status=ExitStatus.NETWORK
    )


def status_error(what: str, status: int) -> VkramaError:
    if status in (401, 403):
        return VkramaError(
            f"{what}: access denied (HTTP {status})",
            hint="log in: set HF_TOKEN for Hugging Face, or `podman login REGISTRY` for registries",
            status=ExitStatus.AUTH,
        )
    if status == 404:
        return VkramaError(
            f"{what}: not found (HTTP 404)",
            hint="check the name, tag and file; `vkrama pull --help` shows the forms",
            status=ExitStatus.NOT_FOUND,
        )
    return VkramaError(
        f"{what}: the server answered HTTP {status}",
        hint="try again later",
        status=ExitStatus.NETWORK,
    )
