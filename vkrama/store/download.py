"""Downloads for the store: one file fetched into a partial file, resumed, verified.

Stage: store (source ─► verified file in partial/). `fetch` goes on with a ranged download
a killed pull left (store/ranges.py), else streams the file, resuming it with HTTP Range
after an interruption or a kill (and starting over when the server ignores Range); a large
file on a server that answers ranges fans out into several streams (store/ranges.py).
Retries a stream that fails while it delivers, and verifies size and sha256. The session
and the failures' wording are store/http.py's, the body copy and the hashing
store/transfer.py's. Must not print (progress goes to `on_progress`) and must never log or
show request headers: they carry tokens.
"""

from __future__ import annotations

import os
from pathlib import Path

import requests

from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import NULL, Download, Reporter
from vkrama.store import ranges
from vkrama.store.http import Http, network_error, reason
from vkrama.store.splice import ConnectionLost
from vkrama.store.transfer import QUEUED, RESET_AFTER, Hasher, RemoteFile, copy_body

PROBE = 1 << 20  # the first request's range when several streams may follow


def fetch(http: Http, remote: RemoteFile, part: Path, on_progress: Reporter = NULL) -> str:
    """Download `remote` into `part`, resuming what is there; return the sha256."""
    sha256 = ranges.resume(http, remote, part, on_progress)
    if sha256 is None:  # no ranged download to resume: one stream (which may fan out)
        sha256 = _transfer(http, remote, part, on_progress)
    if remote.sha256 is not None and sha256 != remote.sha256.lower():
        raise VkramaError(
            f"checksum mismatch for {remote.filename}: expected sha256 {remote.sha256},"
            f" got {sha256}",
            hint="the source changed or the transfer was corrupted; the file was discarded",
            status=ExitStatus.CHECKSUM,
        )
    return sha256


def _transfer(http: Http, remote: RemoteFile, part: Path, on_progress: Reporter) -> str:
    have = part.stat().st_size if part.exists() else 0
    hasher = Hasher(part, have, QUEUED)  # hashes what is on disk while the rest arrives
    try:
        return _stream(http, remote, part, have, hasher, on_progress)
    finally:
        hasher.close()


def _stream(
    http: Http,
    remote: RemoteFile,
    part: Path,
    have: int,
    hasher: Hasher,
    on_progress: Reporter,
) -> str:
    resumed_from = have
    failures = 0
    progress_at_failure = have
    # Several streams only for a file that may be large (a known small one costs no
    # probe), and once a server fails at ranges, one stream to the end.
    fan_out = http.streams > 1 and (remote.size or ranges.PARALLEL_FROM) >= ranges.PARALLEL_FROM
    while True:
        headers = {**remote.headers, "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        elif fan_out:
            # A 206 says the server takes ranges, and how large the file is; the probe is
            # short, so nothing is fetched that a stream would fetch again.
            headers["Range"] = f"bytes=0-{PROBE - 1}"
        try:
            response = http.request(
                "GET", remote.url, headers, what=remote.filename, stream=True, ok=(416,)
            )
            with response:
                if response.status_code == 416:
                    if remote.size is not None and have != remote.size:
                        raise _short(remote.filename, have, remote.size)
                    break  # we already hold every byte the server has
                if not have and fan_out and ranges.worth_it(http, remote, response):
                    fan_out = False
                    hasher.close()
                    sha256: str | None = ranges.start(http, remote, part, response, on_progress)
                    if sha256 is not None:
                        return sha256
                    # The server stopped answering ranges: one stream from what is held.
                    have = resumed_from = progress_at_failure = part.stat().st_size
                    hasher = Hasher(part, have, QUEUED)
                    continue
                if have and not _continues_at(response, have):
                    # The server ignored Range (or answered another one): start over,
                    # from this body if it is the whole file, else with a plain GET.
                    fan_out = False
                    hasher.close()
                    have, resumed_from = 0, 0
                    hasher = Hasher(part, 0, QUEUED)
                    if response.status_code != 200:
                        continue
                total = _total(response, have) or remote.size
                began = have
                # Not "ab": splice(2) refuses a file opened for appending.
                with open(part, "r+b" if have else "wb", buffering=0) as out:
                    out.seek(0, os.SEEK_END)
                    for held in copy_body(response, out.fileno(), hasher, have):
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
            if failures > http.retries:
                if remote.size is not None and isinstance(exc, _StreamEnded):
                    raise _short(remote.filename, have, remote.size) from None
                raise network_error(remote.filename, exc, have) from None
            http.sleep(failures - 1, remote.filename, reason(exc))
    if remote.size is not None and have != remote.size:
        raise _short(remote.filename, have, remote.size)
    return hasher.hexdigest()


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


class _StreamEnded(Exception):
    """The server closed a response before the size it announced: retried like a dropped
    connection, reported as INCOMPLETE once the retries are spent."""


def _short(filename: str, have: int, size: int) -> VkramaError:
    return VkramaError(
        f"{filename} is incomplete: the server sent {have} of {size} bytes",
        hint="the source's file is shorter than it announces; try again later",
        status=ExitStatus.INCOMPLETE,
    )
