"""Loopback servers for the store tests: plain HTTP with Range, a fake Hugging Face endpoint,
a fake Ollama registry (bearer-token flow) and the real `docker-registry` (plain, or TLS with
htpasswd Basic auth).

Each server counts the requests and body bytes it served, so tests can assert "no network
transfer" and "re-downloaded less than 1 MiB".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import bcrypt
import requests


@dataclass
class Resource:
    """What one path answers."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    rate: float | None = None  # bytes per second, None: as fast as possible
    drop_after: int | None = None  # close the connection after this many body bytes
    ignore_range: bool = False
    # How the server lies to a range request that does not start at 0: "200" (the whole file),
    # "other-range" (206 for the bytes one further on), "wrong-bytes" (206, bytes inverted).
    range_lie: str = ""
    token: str | None = None  # require "Authorization: Bearer TOKEN", else 401
    challenge: str = ""  # WWW-Authenticate on 401
    redirect: str | None = None  # answer 302 to this location (headers still sent)
    # Answers (status, headers) to the first requests, one each, before the resource itself:
    # a 429 or 503 with Retry-After, say.
    first: list[tuple[int, dict[str, str]]] = field(default_factory=list)


class LoopbackServer:
    def __init__(self) -> None:
        self.routes: dict[str, Resource] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each request, as it came
        self.bytes_served = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                outer._answer(self, head=True)

            def do_GET(self) -> None:
                outer._answer(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # Another host name for the same server, as Hugging Face's CDN is another host: clients
        # must read the file's metadata from the redirect itself and drop the token there.
        self.cdn_url = f"http://localhost:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, path: str, resource: Resource) -> str:
        self.routes[path] = resource
        return self.url + path

    def _answer(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = urlsplit(h.path).path
        with self.lock:
            self.requests.append((h.command, h.path, dict(h.headers)))
            self.arrivals.append(time.monotonic())
            res = self.routes.get(path)
            first = res.first.pop(0) if res is not None and res.first else None
        if res is None:
            return self._send(h, 404, b"not found", {}, head)
        if first is not None:
            return self._send(h, first[0], b"", first[1], head)
        if res.token and h.headers.get("Authorization") != f"Bearer {res.token}":
            headers = {"WWW-Authenticate": res.challenge} if res.challenge else {}
            return self._send(h, 401, b"unauthorized", headers, head)
        if res.redirect:
            return self._send(h, 302, b"", {**res.headers, "Location": res.redirect}, head)
        if res.status != 200:
            return self._send(h, res.status, res.body, res.headers, head)
        body, status, headers = res.body, 200, dict(res.headers)
        wanted = re.match(r"bytes=(\d+)-(\d*)$", h.headers.get("Range", ""))
        if wanted and not res.ignore_range:
            start = int(wanted.group(1))
            if start >= len(body):
                return self._send(h, 416, b"", {"Content-Range": f"bytes */{len(body)}"}, head)
            end = min(int(wanted.group(2) or len(body) - 1), len(body) - 1)
            lie = res.range_lie if start else ""
            if lie == "200":
                return self._send(h, 200, body, headers, head, res)
            if lie == "other-range":
                start, end = start + 1, min(end + 1, len(body) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            body, status = body[start : end + 1], 206
            if lie == "wrong-bytes":
                body = bytes(b ^ 0xFF for b in body[:4096]) + body[4096:]
        headers.setdefault("Accept-Ranges", "bytes")
        self._send(h, status, body, headers, head, res)

    def _send(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: dict[str, str],
        head: bool,
        res: Resource | None = None,
    ) -> None:
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if head:
            return
        limit = len(body) if res is None or res.drop_after is None else res.drop_after
        chunk = 16384 if res is None or res.rate is None else max(1024, int(res.rate / 20))
        sent = 0
        try:
            while sent < min(limit, len(body)):
                piece = body[sent : min(sent + chunk, limit)]
                h.wfile.write(piece)
                h.wfile.flush()
                sent += len(piece)
                with self.lock:
                    self.bytes_served += len(piece)
                if res is not None and res.rate is not None:
                    time.sleep(len(piece) / res.rate)
        except (BrokenPipeError, ConnectionResetError):
            return
        if sent < len(body):
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def add_hf_file(
    server: LoopbackServer,
    repo: str,
    filename: str,
    data: bytes,
    *,
    etag: str | None = None,
    size: int | None = None,
    token: str | None = None,
    commit: str = "c0ffee" * 6 + "beef",
) -> None:
    """A file on the fake Hugging Face endpoint: resolve URL ─302─► /cdn/SHA with metadata."""
    digest = sha256(data)
    meta = {
        "X-Linked-Etag": f'"{etag or digest}"',
        "X-Linked-Size": str(size if size is not None else len(data)),
        "X-Repo-Commit": commit,
        "ETag": '"gitoid"',
    }
    server.add(f"/cdn/{digest}", Resource(body=data))
    cdn = f"{server.cdn_url}/cdn/{digest}"
    server.add(
        f"/{repo}/resolve/main/{filename}", Resource(headers=meta, redirect=cdn, token=token)
    )
    tree_path = f"/api/models/{repo}/tree/main"
    old = server.routes.get(tree_path)
    entries = json.loads(old.body) if old else []
    entries.append({"type": "file", "path": filename, "size": len(data),
                    "lfs": {"oid": digest, "size": len(data)}})  # fmt: skip
    server.add(tree_path, Resource(body=json.dumps(entries).encode(), token=token))


def add_registry_model(
    server: LoopbackServer, repo: str, tag: str, data: bytes, media_type: str, token: str
) -> str:
    """A manifest + blob behind the bearer-token flow, as registry.ollama.ai answers."""
    digest = f"sha256:{sha256(data)}"
    config = b"{}"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": f"sha256:{sha256(config)}", "size": len(config)},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.license", "digest": "sha256:" + "0" * 64,
             "size": 3},
            {"mediaType": media_type, "digest": digest, "size": len(data)},
        ],
    }  # fmt: skip
    challenge = (
        f'Bearer realm="{server.url}/token",service="loopback",scope="repository:{repo}:pull"'
    )
    server.add("/token", Resource(body=json.dumps({"token": token}).encode()))
    server.add(f"/v2/{repo}/manifests/{tag}",
               Resource(body=json.dumps(manifest).encode(), token=token, challenge=challenge,
                        headers={"Content-Type": manifest["mediaType"]}))  # fmt: skip
    server.add(f"/v2/{repo}/blobs/{digest}",
               Resource(body=data, token=token, challenge=challenge))  # fmt: skip
    return digest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RegistryAuth:
    """htpasswd Basic auth for `docker_registry`, which then wants TLS: a self-signed cert."""

    user: str
    password: str
    cert: Path  # also the CA to trust: it signs itself
    key: Path


def self_signed(root: Path, ip: str) -> tuple[Path, Path]:
    """A throwaway certificate for `ip` (openssl); returns (cert, key)."""
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={ip}",
         "-addext", f"subjectAltName=IP:{ip}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@contextlib.contextmanager
def docker_registry(
    root: Path, auth: RegistryAuth | None = None, ip: str = "127.0.0.1", name: str | None = None
) -> Iterator[str]:
    """Debian's real `docker-registry` on `ip`; yields "NAME:PORT" (NAME defaults to `ip`).

    With `auth`, it speaks TLS and wants htpasswd Basic auth.
    """
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    port = free_port()
    config = root / "registry.yml"
    text = (
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: {ip}:{port}\n"
    )
    if auth is not None:
        # docker-registry reads bcrypt htpasswd lines only.
        hashed = bcrypt.hashpw(auth.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (root / "htpasswd").write_text(f"{auth.user}:{hashed}\n")
        text += (
            f"  tls:\n    certificate: {auth.cert}\n    key: {auth.key}\n"
            f"auth:\n  htpasswd:\n    realm: vkrama-test\n    path: {root / 'htpasswd'}\n"
        )
    config.write_text(text)
    process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)  # fmt: skip
    scheme = "https" if auth else "http"
    verify: bool | str = str(auth.cert) if auth else True
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                probe = requests.get(f"{scheme}://{ip}:{port}/v2/", timeout=1, verify=verify)
                if probe.status_code in (200, 401):
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start: {process.stderr!r}")
            time.sleep(0.1)
        yield f"{name or ip}:{port}"
    finally:
        process.terminate()
        process.wait(10)


def push_artifact(host: str, repo: str, tag: str, layers: list[tuple[str, bytes, dict[str, str]]],
                  artifact_type: str, config_type: str,
                  auth: RegistryAuth | None = None) -> None:  # fmt: skip
    """Push an OCI artifact with the plain distribution API (blob uploads, then the manifest)."""
    session = requests.Session()
    session.trust_env = False  # the machine's REQUESTS_CA_BUNDLE would override `verify`
    if auth is not None:
        session.auth, session.verify = (auth.user, auth.password), str(auth.cert)
    origin = f"{'https' if auth else 'http'}://{host}"
    base = f"{origin}/v2/{repo}"

    def upload(data: bytes) -> str:
        digest = f"sha256:{sha256(data)}"
        start = session.post(f"{base}/blobs/uploads/", timeout=10)
        assert start.status_code == 202, start.text
        location = start.headers["Location"]
        if location.startswith("/"):
            location = f"{origin}{location}"
        sep = "&" if "?" in location else "?"
        done = session.put(f"{location}{sep}digest={digest}", data=data, timeout=30,
                           headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        assert done.status_code == 201, done.text
        return digest

    config = json.dumps({"descriptor": {"name": repo}}).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact_type,
        "config": {"mediaType": config_type, "digest": upload(config), "size": len(config)},
        "layers": [
            {"mediaType": media, "digest": upload(data), "size": len(data),
             "annotations": annotations}
            for media, data, annotations in layers
        ],
    }  # fmt: skip
    answer = session.put(f"{base}/manifests/{tag}", data=json.dumps(manifest), timeout=10,
                         headers={"Content-Type": manifest["mediaType"]})  # fmt: skip
    assert answer.status_code == 201, answer.text


def add_manifest(
    server: LoopbackServer, repo: str, tag: str, layers: list[dict[str, object]],
    blobs: dict[str, bytes] | None = None, manifest: dict[str, object] | None = None,
) -> None:  # fmt: skip
    """A manifest (no auth) exactly as given, hostile or not: the registry checks nothing.

    `layers` go into an OCI image manifest unless `manifest` gives the whole document; each
    of `blobs` is served under /v2/REPO/blobs/DIGEST.
    """
    document: object = manifest if manifest is not None else {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": f"sha256:{sha256(b'{}')}", "size": 2},
        "layers": layers,
    }  # fmt: skip
    kind = document.get("mediaType") if isinstance(document, dict) else "application/json"
    headers = {"Content-Type": str(kind)}
    server.add(f"/v2/{repo}/manifests/{tag}",
               Resource(body=json.dumps(document).encode(), headers=headers))  # fmt: skip
    for digest, data in (blobs or {}).items():
        server.add(f"/v2/{repo}/blobs/{digest}", Resource(body=data))


def set_hf_listing(server: LoopbackServer, repo: str, body: bytes) -> None:
    """Replace the tree API's answer for `repo` with `body` as it is."""
    server.add(f"/api/models/{repo}/tree/main", Resource(body=body))


def killed_pull(server: LoopbackServer, url: str, env: Mapping[str, str], served: int,
                within: float) -> int:  # fmt: skip
    """Run `vkrama pull URL` and SIGKILL it once the server has sent `served` body bytes (or
    after `within` seconds, or when it ended by itself); the bytes sent by then."""
    pull = subprocess.Popen([sys.executable, "-m", "vkrama", "pull", url],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + within
    while server.bytes_served < served and time.monotonic() < deadline and pull.poll() is None:
        time.sleep(0.01)  # polls what the server sent: a progress, not a readiness guess
    pull.send_signal(signal.SIGKILL)
    pull.wait()
    return server.bytes_served
