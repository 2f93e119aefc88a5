"""Find podman's API socket, or start a private `podman system service` that exits when idle.

Stage: engine (connection). Must not import podman-py (a ping is one raw HTTP request, kept
cheap for commands like `ps`), and must not print: it returns an `Endpoint` or raises
`VkramaError(ENGINE_UNAVAILABLE)`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vkrama.errors import ExitStatus, VkramaError

INSTALL_HINT = (
    "install podman (Debian/Ubuntu: sudo apt-get install podman runc), "
    "or start its socket: systemctl --user enable --now podman.socket"
)


@dataclass(frozen=True)
class Endpoint:
    """A podman API socket that answered a ping, and how it was found."""

    url: str  # unix:///path/to/podman.sock
    source: str  # CONTAINER_HOST, config, rootless socket, rootful socket, private service
    started: bool = False  # True when vkrama started the service behind it
    idle_timeout: int | None = None  # the private service exits after this many idle seconds

    @property
    def path(self) -> str:
        return self.url.removeprefix("unix://")


def ping(url: str, timeout: float = 1.0) -> bool:
    """True when a podman API answers `GET /_ping` on this unix socket URL."""
    if not url.startswith("unix://"):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(url.removeprefix("unix://"))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
            reply = sock.recv(256)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


def candidates(environ: Mapping[str, str], configured: str) -> tuple[list[tuple[str, str]], bool]:
    """Socket URLs to try in order, and whether the user named one explicitly."""
    if environ.get("CONTAINER_HOST"):
        return [(environ["CONTAINER_HOST"], "CONTAINER_HOST")], True
    if configured:
        return [(configured, "config engine.url")], True
    found = []
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime and os.getuid() != 0:
        found.append((f"unix://{runtime}/podman/podman.sock", "rootless socket"))
    if os.getuid() == 0:
        found.append(("unix:///run/podman/podman.sock", "rootful socket"))
    return found, False


def discover(
    environ: Mapping[str, str], configured: str, runtime_dir: Path, idle_timeout: int
) -> Endpoint:
    """The first socket that answers; else a private service vkrama starts and reuses."""
    urls, explicit = candidates(environ, configured)
    for url, source in urls:
        if ping(url):
            return Endpoint(url, source)
    if explicit:
        url, source = urls[0]
        raise VkramaError(
            f"podman is not reachable at {url} (from {source})",
            hint="start the service there (podman system service), or unset it to let vkrama "
            "start its own",
            status=ExitStatus.ENGINE_UNAVAILABLE,
        )
    return start_private_service(runtime_dir, idle_timeout)


def start_private_service(runtime_dir: Path, idle_timeout: int) -> Endpoint:
    """Start `podman system service` on a private socket, or reuse one still alive."""
    url = f"unix://{runtime_dir}/podman.sock"
    if ping(url):
        return Endpoint(url, "private service", idle_timeout=idle_timeout)
    podman = shutil.which("podman")
    if podman is None:
        raise VkramaError(
            "podman is not installed", hint=INSTALL_HINT, status=ExitStatus.ENGINE_UNAVAILABLE
        )
    runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Two vkrama commands starting at once must not race for the same socket.
    with open(runtime_dir / "service.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ping(url):
            return Endpoint(url, "private service", idle_timeout=idle_timeout)
        Path(url.removeprefix("unix://")).unlink(missing_ok=True)
        with open(runtime_dir / "service.log", "ab") as log:
            process = subprocess.Popen(
                [podman, "system", "service", f"--time={idle_timeout}", url],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # outlives this command; exits after idle_timeout
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if ping(url, timeout=0.5):
                return Endpoint(url, "private service", started=True, idle_timeout=idle_timeout)
            if process.poll() is not None:
                break
            time.sleep(0.02)
    tail = _tail(runtime_dir / "service.log")
    raise VkramaError(
        f"podman system service did not start: {tail or 'no output'}",
        hint=f"see {runtime_dir / 'service.log'}; `podman info` shows podman's own diagnosis",
        status=ExitStatus.ENGINE_UNAVAILABLE,
    )


def keep_alive(endpoint: Endpoint) -> None:
    """Ping a private service more often than its idle timeout while this process lives.

    Without it, a command that pauses between API calls (a model download before the
    container starts, a test session) would find the service gone. A daemon thread dies
    with the process, and the service exits on its own `idle_timeout` later.
    """
    if endpoint.idle_timeout is None:
        return
    interval = max(0.5, endpoint.idle_timeout / 3)

    def ping_forever() -> None:
        while True:
            time.sleep(interval)
            ping(endpoint.url, timeout=interval)

    threading.Thread(target=ping_forever, name="podman-keepalive", daemon=True).start()


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
