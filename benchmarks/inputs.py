"""What the comparisons need: the vkrama command, ramalama, images, models, a podman socket.

Stage: benchmarks (not part of vkrama). Everything it makes lives under benchmarks/.cache/
(git-ignored) and is reused by later runs. Must not touch the user's vkrama or ramalama
state: both tools get their own state directories here. ramalama is a peer: when it cannot
be installed, comparisons go on without it (PeerUnavailable).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import PeerUnavailable, SideFailed, run

REPO = Path(__file__).resolve().parent.parent
# 0.25.0 was seen working here against a local image; pinned so that numbers are comparable.
RAMALAMA_VERSION = "0.25.0"
# ramalama's own flags that keep it off every registry and out of the user's store; the
# results file records them.
RAMALAMA_NO_REGISTRY = ("--pull", "never")
# ramalama runs every container with `--init`; podman then needs its init binary (Debian's
# `catatonit` package), or each ramalama serve/bench exits 125 with "container-init binary
# not found" (seen on a fresh machine). podman's default `init_path` comes first.
PODMAN_INIT_PATHS = (Path("/usr/libexec/podman/catatonit"), Path("/usr/bin/catatonit"))


def podman_init_missing(paths: tuple[Path, ...] = PODMAN_INIT_PATHS) -> str:
    """Why ramalama's `--init` containers cannot start here, or "" when they can."""
    if any(path.exists() for path in paths):
        return ""
    return (
        "ramalama runs containers with --init, and podman's init binary is missing"
        f" (no {paths[0]}): install Debian's catatonit (`apt-get install catatonit`;"
        " scripts/setup.sh does)"
    )


def image_ref(backend: str) -> str:
    return f"localhost/vkrama/{backend}:latest"


def planned_podman_run(dry_run_stdout: str, what: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The one `podman run` line vkrama's --dry-run printed, to run by hand (the raw side).

    Its name and labels are dropped (each sample gets a fresh container, and `vkrama ps`
    must not count it as one of vkrama's); `extra` flags go right after `podman run`.
    """
    lines = [line for line in dry_run_stdout.splitlines() if line.startswith("podman run")]
    if len(lines) != 1:
        raise SideFailed(f"{what} printed {len(lines)} podman commands, not 1")
    words = shlex.split(lines[0])
    kept: list[str] = []
    skip = False
    for word in words[2:]:
        if skip:
            skip = False
        elif word in ("--name", "--label"):
            skip = True
        else:
            kept.append(word)
    return [*words[:2], *extra, *kept]


@dataclass
class Session:
    """One benchmark run: its mode, its cache, and the tools it runs."""

    quick: bool
    pairs: int
    warmup: int
    cache: Path = REPO / "benchmarks" / ".cache"
    _socket: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _ramalama_models: set[str] = field(default_factory=set, repr=False)

    @property
    def home(self) -> Path:
        return self.cache / "vkrama-home"

    @property
    def socket_url(self) -> str:
        return f"unix://{self.cache / 'podman.sock'}"

    def vkrama(self, *args: str) -> list[str]:
        """argv for the vkrama command of this checkout (its .venv), else the one on PATH."""
        local = REPO / ".venv" / "bin" / "vkrama"
        exe = str(local) if local.exists() else shutil.which("vkrama")
        if exe is None:
            raise SideFailed("vkrama is not installed (bash scripts/setup.sh makes .venv)")
        return [exe, *args]

    def env(self) -> dict[str, str]:
        """vkrama's environment: its own state, and a podman socket that is already up.

        A user's machine has podman.socket (systemd) running; vkrama then connects to it. The
        same socket here keeps the private service's start (and its idle exit after 5 s) out
        of the numbers; serve_ready also reports the cold case on its own line.
        """
        return {"VKRAMA_HOME": str(self.home), "CONTAINER_HOST": self.socket_url}

    def start_socket(self) -> None:
        """A `podman system service` for the whole run (stopped by `close`)."""
        if self._socket is not None:
            return
        path = self.cache / "podman.sock"
        path.unlink(missing_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        self._socket = subprocess.Popen(
            ["podman", "system", "service", "--time=0", self.socket_url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not path.exists():
            time.sleep(0.05)
        if not path.exists():
            raise SideFailed("podman system service did not start")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.terminate()
            self._socket.wait(timeout=10)
            self._socket = None

    # -- ramalama -------------------------------------------------------------------------

    @property
    def ramalama_venv(self) -> Path:
        return self.cache / "ramalama-venv"

    def ramalama(self, *args: str) -> list[str]:
        """argv for ramalama from its own virtualenv, installed from PyPI on first use."""
        missing = podman_init_missing()
        if missing:
            raise PeerUnavailable(missing)
        exe = self.ramalama_venv / "bin" / "ramalama"
        if not exe.exists():
            self._install_ramalama()
        store = self.cache / "ramalama-store"
        return [str(exe), "--store", str(store), *args]

    def ramalama_model(self, path: Path) -> str:
        """`file://PATH`, copied into ramalama's store first (its `--pull never` would otherwise
        refuse a model it does not hold); untimed, once per run."""
        ref = f"file://{path}"
        if ref not in self._ramalama_models:
            run(
                self.ramalama("pull", ref),
                env=self.ramalama_env(),
                what="ramalama pull",
                peer=True,
                timeout=600,
            )
            self._ramalama_models.add(ref)
        return ref

    def ramalama_env(self) -> dict[str, str]:
        """An empty config file: ramalama's built-in defaults, whatever the user configured
        (its shipped ramalama.conf sets nothing either). HOME stays: rootless podman keeps
        its images there."""
        empty = self.cache / "ramalama-empty.conf"
        if not empty.exists():
            self.cache.mkdir(parents=True, exist_ok=True)
            empty.write_text("# no settings: ramalama's defaults\n")
        return {"RAMALAMA_CONFIG": str(empty)}

    def _install_ramalama(self) -> None:
        try:
            run([sys.executable, "-m", "venv", str(self.ramalama_venv)], what="venv", peer=True)
            pip = str(self.ramalama_venv / "bin" / "pip")
            run(
                [
                    pip,
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "--timeout=20",
                    "--retries=1",
                    f"ramalama=={RAMALAMA_VERSION}",
                ],
                what="pip install ramalama",
                peer=True,
                timeout=600,
            )
        except SideFailed as failed:
            shutil.rmtree(self.ramalama_venv, ignore_errors=True)
            raise PeerUnavailable(f"ramalama could not be installed: {failed}") from None

    # -- images and models ----------------------------------------------------------------

    def image(self, backend: str) -> str:
        """vkrama's image for `backend`, built with `vkrama images build` when absent."""
        ref = image_ref(backend)
        exists = subprocess.run(["podman", "image", "exists", ref], check=False)
        if exists.returncode != 0:
            run(
                self.vkrama("images", "build", backend),
                env=self.env(),
                timeout=1800,
                what=f"vkrama images build {backend}",
            )
        return ref

    def model(self, kind: str) -> Path:
        """examples/make_model.py's `tiny` or `bench` model, made once into the cache."""
        path = self.cache / f"{kind}.gguf"
        if not path.exists():
            if kind == "bench":
                self.image("cpu")  # llama-quantize comes from the cpu image
            self.cache.mkdir(parents=True, exist_ok=True)
            run(
                [sys.executable, str(REPO / "examples" / "make_model.py"), kind, str(path)],
                what=f"make_model.py {kind}",
                timeout=900,
            )
        return path
