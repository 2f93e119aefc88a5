"""vkrama as a non-root user: bench, run, serve -d, ps and stop against rootless podman.

Rootless is how most people run vkrama. The set-up is what such a user has: an ordinary
account (useradd -m, its subuid/subgid ranges), its own image store (the cpu image is
`podman save`d by root and `podman load`ed by the user: 15 s here against a rebuild),
slirp4netns for published ports (scripts/setup.sh installs it) and a usable /dev/net/tun
(0666 on an ordinary host; this sandbox has it 0600, so the test opens it up while it runs
and restores its mode). Everything vkrama does runs as the user; root only sets up.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from vkrama import config, images
from vkrama.engine import Engine

pytestmark = [
    pytest.mark.podman,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="making a user and its set-up needs root"),
]

USER = "vkrama-rootless"
REPO = Path(__file__).resolve().parent.parent
TUN = Path("/dev/net/tun")
SYSTEM_PYTHON = Path("/usr/bin/python3")


@dataclass
class Rootless:
    """A user with its own podman store, and a way to run commands as that user."""

    name: str
    uid: int
    home: Path
    work: Path  # a directory of the user's, for its model and VKRAMA_HOME
    env: dict[str, str]

    def run(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        pairs = [f"{key}={value}" for key, value in self.env.items()]
        return subprocess.run(
            ["runuser", "-u", self.name, "--", "env", "-i", *pairs, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.work,
            stdin=subprocess.DEVNULL,
        )

    def vkrama(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self.run(str(SYSTEM_PYTHON), "-m", "vkrama", *args, timeout=timeout)


def _user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", USER], check=True)
        return pwd.getpwnam(USER)


def _readable_code(user: str, work: Path) -> str:
    """PYTHONPATH giving the user this checkout's vkrama and its dependencies.

    The test's own interpreter may live where the user cannot read it (pyenv under /root),
    so the user runs the system python3 of the same version on this virtualenv's packages;
    a checkout the user cannot read is copied first.
    """
    version = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if tuple(int(part) for part in version) != sys.version_info[:2]:
        pytest.fail(f"{SYSTEM_PYTHON} is not Python {sys.version_info[0]}.{sys.version_info[1]}")
    code, packages = REPO, Path(sysconfig.get_paths()["purelib"])
    readable = subprocess.run(
        ["runuser", "-u", user, "--", "test", "-r", str(code / "vkrama" / "__init__.py"), "-a",
         "-r", str(packages)],
    ).returncode == 0  # fmt: skip
    if not readable:
        shutil.copytree(REPO / "vkrama", work / "code" / "vkrama")
        shutil.copytree(packages, work / "site-packages", symlinks=False)
        code, packages = work / "code", work / "site-packages"
    return f"{code}:{packages}"


def _load_image(user: Rootless, engine: Engine, backend: str) -> None:
    """The user gets root's image of this backend unless it holds the same one already."""
    ref = images.ensure(engine, backend, config.load()).ref
    wanted = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", ref],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    held = user.run("podman", "image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    if held == wanted:
        return
    save = subprocess.Popen(["podman", "save", ref], stdout=subprocess.PIPE)
    pairs = [f"{key}={value}" for key, value in user.env.items()]
    load = subprocess.run(
        ["runuser", "-u", user.name, "--", "env", "-i", *pairs, "podman", "load"],
        stdin=save.stdout, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert save.wait() == 0 and load.returncode == 0, load.stderr


@pytest.fixture(scope="module")
def rootless(engine: Engine, tiny_model: Path) -> Iterator[Rootless]:
    entry = _user()
    subuid = Path("/etc/subuid").read_text().splitlines()
    assert any(line.startswith(f"{USER}:") for line in subuid), "useradd gave no subuid range"
    assert shutil.which("slirp4netns"), "scripts/setup.sh installs slirp4netns"
    tun_mode = stat.S_IMODE(TUN.stat().st_mode)
    TUN.chmod(0o666)  # what an ordinary host has; this sandbox's is 0600
    # not under pytest's temp root, which is 0700 and root's
    work = Path(tempfile.mkdtemp(prefix="vkrama-rootless-"))
    work.chmod(0o755)
    # podman keeps its run root in its database: the same path on every run of this test
    runtime = Path(f"/tmp/vkrama-rootless-run-{entry.pw_uid}")
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.chown(runtime, entry.pw_uid, entry.pw_gid)
    shutil.copy(tiny_model, work / "tiny.gguf")
    user = Rootless(USER, entry.pw_uid, Path(entry.pw_dir), work, {})
    user.env = {
        "HOME": entry.pw_dir,
        "USER": USER,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "XDG_RUNTIME_DIR": str(runtime),
        "VKRAMA_HOME": str(work / "vkrama-home"),
        "PYTHONPATH": _readable_code(USER, work),
    }
    subprocess.run(["chown", "-R", f"{USER}:", str(work)], check=True)
    try:
        _load_image(user, engine, "cpu")
        yield user
    finally:
        user.vkrama("stop", "--all")
        TUN.chmod(tun_mode)
        shutil.rmtree(work)


def test_rootless_bench_run_serve_and_stop(rootless: Rootless) -> None:
    model = str(rootless.work / "tiny.gguf")
    info = rootless.run("podman", "info", "--format", "{{.Host.Security.Rootless}}")
    assert info.stdout.strip() == "true", info.stderr

    bench = rootless.vkrama("bench", model, "--backend", "cpu", "-p", "32", "-n", "8", "-r", "2")
    assert bench.returncode == 0, bench.stderr
    assert [line.split()[-1] for line in bench.stdout.splitlines()[2:4]] == ["ok", "ok"]

    answer = rootless.vkrama("run", model, "Say hi", "--backend", "cpu", "--max-tokens", "8")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip(), answer.stderr

    served = rootless.vkrama("serve", model, "--backend", "cpu", "-d", "--port", "auto")
    assert served.returncode == 0, served.stderr
    name, url = served.stdout.split()[-2:]
    assert url.startswith("http://127.0.0.1:")
    # published through rootless networking (slirp4netns/rootlessport), reached from outside
    assert requests.get(f"{url}/v1/models", timeout=30).status_code == 200
    assert name in rootless.vkrama("ps").stdout

    stopped = rootless.vkrama("stop", name)
    assert stopped.returncode == 0, stopped.stderr
    left = rootless.run("podman", "ps", "-a", "--filter", "label=vkrama.version", "-q")
    assert left.returncode == 0 and left.stdout.strip() == "", left.stdout
