"""The kernel path of one stream (store/splice.py): plain http bodies of known length are
spliced socket → pipe → file, whole and hashed; anything else (chunked, compressed, TLS)
is read the ordinary way; a body cut short or a server gone silent fails as a dropped
connection would, so the downloader's retries and resume take over.

Each server here is a raw socket speaking exactly the bytes a test gives it, so that what
arrives with the headers, when the body stops, and how it is framed are under the test's
control.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from store_servers import self_signed

from vkrama.errors import ExitStatus, VkramaError
from vkrama.store import splice
from vkrama.store.download import fetch
from vkrama.store.http import Http
from vkrama.store.transfer import RemoteFile

MiB = 1 << 20
BODY = os.urandom(3 * MiB + 12345)  # not a multiple of a page or of the pipe

Script = Callable[[socket.socket], None]


@contextmanager
def raw_server(script: Script, tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """One connection on a loopback port, answered by `script`; yields the file's URL. The
    connection stays open until the test ends (a stalled body must not look closed)."""
    listener = socket.create_server(("127.0.0.1", 0))
    finished = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            conn = context.wrap_socket(conn, server_side=True)
        with conn:
            conn.recv(65536)  # the request (one small GET)
            try:
                script(conn)
            except OSError:
                return  # the client hung up: what a test may well want
            finished.wait(30)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{listener.getsockname()[1]}/m.gguf"
    finally:
        finished.set()
        thread.join(30)
        listener.close()


def head(length: int | None, *extra: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: application/octet-stream", *extra]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def whole(conn: socket.socket) -> None:
    # The headers and the body's first bytes in one send: http.client's buffer takes some
    # of the body with the headers, and those must come out first.
    conn.sendall(head(len(BODY)) + BODY[:5000])
    conn.sendall(BODY[5000:])


def chunked(conn: socket.socket) -> None:
    conn.sendall(head(None, "Transfer-Encoding: chunked"))
    for start in range(0, len(BODY), MiB):
        piece = BODY[start : start + MiB]
        conn.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    conn.sendall(b"0\r\n\r\n")


def compressed(conn: socket.socket) -> None:
    body = gzip.compress(BODY, compresslevel=1)
    conn.sendall(head(len(body), "Content-Encoding: gzip") + body)


def cut_short(conn: socket.socket) -> None:
    conn.sendall(head(len(BODY)) + BODY[: MiB + 1])
    conn.shutdown(socket.SHUT_WR)  # a clean end of stream, well before Content-Length


def stalled(conn: socket.socket) -> None:
    conn.sendall(head(len(BODY)) + BODY[:MiB])  # then nothing, with the connection open


def get(url: str, verify: bool | str = True, timeout: float = 30.0) -> requests.Response:
    headers = {"Accept-Encoding": "identity"}
    return requests.get(url, headers=headers, stream=True, timeout=timeout, verify=verify)


def splice_all(kernel: splice.Spliced, out: Path) -> int:
    moved = 0
    with kernel, open(out, "wb", buffering=0) as f:
        while count := kernel.into(f.fileno(), MiB):
            moved += count
    return moved


def test_a_plain_http_body_is_spliced_whole_with_what_came_with_the_headers(
    tmp_path: Path,
) -> None:
    with raw_server(whole) as url, get(url) as response:
        kernel = splice.spliced(response)
        assert kernel is not None
        assert splice_all(kernel, tmp_path / "m.part") == len(BODY)
    assert (tmp_path / "m.part").read_bytes() == BODY


@pytest.mark.parametrize(
    "script",
    [pytest.param(chunked, id="chunked-encoding"),
     pytest.param(compressed, id="a-compressed-body")],
)  # fmt: skip
def test_bodies_the_kernel_cannot_pass_through_are_read_and_still_right(
    tmp_path: Path, script: Script
) -> None:
    with raw_server(script) as url, get(url) as response:
        assert splice.spliced(response) is None
    with raw_server(script) as url:
        remote = RemoteFile("m.gguf", url)
        assert fetch(Http(), remote, tmp_path / "m.part") == hashlib.sha256(BODY).hexdigest()
    assert (tmp_path / "m.part").read_bytes() == BODY


def test_https_is_decrypted_in_python_and_still_right(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "127.0.0.1")
    with raw_server(whole, tls=(cert, key)) as url, get(url, verify=str(cert)) as response:
        assert splice.spliced(response) is None
    with raw_server(whole, tls=(cert, key)) as url:
        remote = RemoteFile("m.gguf", url)
        digest = fetch(Http(verify=str(cert)), remote, tmp_path / "m.part")
    assert digest == hashlib.sha256(BODY).hexdigest()


def test_a_body_spliced_at_an_offset_lands_there_and_frees_its_connection(
    tmp_path: Path,
) -> None:
    # How ranges.py uses it: each range at its own offset of a preallocated file, and a
    # connection whose body was read to the end goes back to the pool for the next range.
    part = tmp_path / "m.part"
    part.write_bytes(b"\0" * (len(BODY) + 100))
    with raw_server(whole) as url, get(url) as response:
        kernel = splice.spliced(response)
        assert kernel is not None
        with kernel, open(part, "r+b", buffering=0) as f:
            moved = 0
            while count := kernel.into(f.fileno(), MiB, 100 + moved):
                moved += count
        assert kernel.fp.isclosed()  # what ranges._keep_alive asks of the response
    assert part.read_bytes() == b"\0" * 100 + BODY


def test_a_file_that_refuses_splice_still_gets_every_byte(tmp_path: Path) -> None:
    # splice(2) answers EINVAL for some files (one opened for appending, some file
    # systems); the bytes already in the pipe are then copied through user space.
    part = tmp_path / "m.part"
    with raw_server(whole) as url, get(url) as response:
        kernel = splice.spliced(response)
        assert kernel is not None
        with kernel, open(part, "ab", buffering=0) as f:
            while kernel.into(f.fileno(), MiB):
                pass
        assert not kernel.to_file
    assert part.read_bytes() == BODY


def test_a_body_cut_short_is_a_dropped_connection_after_what_did_come(tmp_path: Path) -> None:
    with raw_server(cut_short) as url, get(url) as response:
        kernel = splice.spliced(response)
        assert kernel is not None
        moved = 0
        with (
            kernel,
            open(tmp_path / "m.part", "wb", buffering=0) as f,
            pytest.raises(splice.ConnectionLost, match="bytes early") as lost,
        ):
            while count := kernel.into(f.fileno(), MiB):
                moved += count
    assert moved == MiB + 1 and not lost.value.timed_out
    assert (tmp_path / "m.part").read_bytes() == BODY[: MiB + 1]


def test_a_server_gone_silent_mid_body_times_out(tmp_path: Path) -> None:
    with raw_server(stalled) as url, get(url, timeout=0.5) as response:
        kernel = splice.spliced(response)
        assert kernel is not None
        with pytest.raises(splice.ConnectionLost) as lost:
            splice_all(kernel, tmp_path / "m.part")
    assert lost.value.timed_out
    assert (tmp_path / "m.part").read_bytes() == BODY[:MiB]


LOST = [
    ("a-spliced-body-cut-short", cut_short, False,
     "connection failed or dropped (1048577 bytes kept; pulling again resumes)"),
    ("a-spliced-body-gone-silent", stalled, False,
     "timed out (1048576 bytes kept; pulling again resumes)"),
    ("a-body-read-over-tls-cut-short", cut_short, True, "connection failed or dropped ("),
    ("a-body-read-over-tls-gone-silent", stalled, True, "timed out ("),
]  # fmt: skip


@pytest.mark.parametrize(("script", "tls", "said"), [c[1:] for c in LOST], ids=[c[0] for c in LOST])
def test_a_lost_body_is_a_network_error_that_says_how_and_keeps_the_bytes(
    tmp_path: Path, script: Script, tls: bool, said: str
) -> None:
    # The bodies vkrama reads itself (splice, http.client's readinto) raise its own
    # ConnectionLost; the user reads the words requests' own failures get.
    cert, key = self_signed(tmp_path, "127.0.0.1")
    with raw_server(script, tls=(cert, key) if tls else None) as url:
        http = Http(retries=0, timeout=0.5, verify=str(cert))
        with pytest.raises(VkramaError) as caught:
            fetch(http, RemoteFile("m.gguf", url, size=len(BODY)), tmp_path / "m.part")
    assert caught.value.status == ExitStatus.NETWORK
    assert caught.value.message.startswith(f"download of m.gguf failed: {said}")
    assert (tmp_path / "m.part").stat().st_size >= MiB
