"""scripts/setup.sh and podman's configuration: a user's containers.conf is never written.

The podman step is checked twice: against a temporary root (every case of what a user's
files may set), and for real, with the whole of scripts/setup.sh run twice in a private
mount namespace whose /etc/containers the test states itself (empty, as on a fresh machine,
or holding a user's own files); there, podman must still get runc and vkrama's ulimits from
vkrama's drop-in, and nothing the test put there may change.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

CONF_SCRIPT = REPO / "scripts" / "podman_conf.py"
DROP_IN = Path("etc/containers/containers.conf.d/50-vkrama.conf")
USERS_OWN = b"""# my podman settings, hand-written
[containers]
log_size_max = 10485760   # keep logs small
tz = "UTC"

[engine]
image_parallel_copies = 2
"""


def podman_conf(root: Path, nofile: int = 20000) -> list[str]:
    limits = ("--nofile", str(nofile), "--nproc", "4096")
    done = subprocess.run(
        [sys.executable, str(CONF_SCRIPT), "--root", str(root), *limits],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def users_machine(root: Path, text: bytes = USERS_OWN) -> Path:
    conf = root / "etc/containers/containers.conf"
    conf.parent.mkdir(parents=True)
    conf.write_bytes(text)
    return conf


def test_setup_twice_leaves_a_users_containers_conf_byte_for_byte(tmp_path: Path) -> None:
    conf = users_machine(tmp_path)
    before = conf.stat()
    told = podman_conf(tmp_path)
    assert told == [
        f"setup: wrote {tmp_path / DROP_IN} (containers.default_ulimits, engine.runtime)"
    ]
    written = (tmp_path / DROP_IN).stat()
    assert podman_conf(tmp_path) == []  # the second run changes nothing, says nothing
    assert conf.read_bytes() == USERS_OWN
    assert (conf.stat().st_mtime_ns, conf.stat().st_ino) == (before.st_mtime_ns, before.st_ino)
    assert (tmp_path / DROP_IN).stat().st_mtime_ns == written.st_mtime_ns
    assert (tmp_path / DROP_IN).read_text().splitlines()[1:] == [
        "",
        "[containers]",
        'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]',
        "",
        "[engine]",
        'runtime = "runc"',
    ]


def test_a_key_the_user_set_is_left_to_the_user_and_named(tmp_path: Path) -> None:
    conf = users_machine(tmp_path, USERS_OWN + b'runtime = "crun"\n')
    told = podman_conf(tmp_path)
    assert told[0] == (
        f'setup: {conf} sets engine.runtime; leaving it (vkrama would use runtime = "runc")'
    )
    assert "runtime" not in (tmp_path / DROP_IN).read_text()
    assert "default_ulimits" in (tmp_path / DROP_IN).read_text()


def test_a_users_drop_in_counts_and_commented_keys_do_not(tmp_path: Path) -> None:
    users_machine(tmp_path, b'[engine]\n# runtime = "crun"\n[engine.runtimes]\nrunc = ["/x"]\n')
    theirs = tmp_path / "etc/containers/containers.conf.d/10-site.conf"
    theirs.parent.mkdir()
    theirs.write_text('[containers]\ndefault_ulimits = ["nofile=100:100"]\n')
    podman_conf(tmp_path)
    assert (tmp_path / DROP_IN).read_text().splitlines()[1:] == ["", "[engine]", 'runtime = "runc"']


def test_vkramas_drop_in_follows_the_host_and_goes_when_nothing_is_missing(
    tmp_path: Path,
) -> None:
    conf = users_machine(tmp_path)
    podman_conf(tmp_path, nofile=20000)
    assert podman_conf(tmp_path, nofile=1024)[0].startswith("setup: wrote")
    assert "nofile=1024:1024" in (tmp_path / DROP_IN).read_text()
    conf.write_bytes(USERS_OWN + b'runtime = "runc"\n[containers]\ndefault_ulimits = []\n')
    assert podman_conf(tmp_path)[-1].startswith("setup: removed")
    assert not (tmp_path / DROP_IN).exists()
    assert sorted(p.name for p in (tmp_path / "etc/containers").rglob("*")) == [
        "containers.conf",
        "containers.conf.d",
    ]


NAMESPACE_SCRIPT = r"""
set -euo pipefail
mount --make-rprivate /
mount --bind "$FAKE_ETC" /etc/containers
bash scripts/setup.sh
bash scripts/setup.sh
echo "nofile=$(podman run --rm --network none docker.io/library/debian:sid sh -c 'ulimit -n')"
podman --log-level=debug info 2>&1 | grep -o 'Merged system config [^ ]*conf' | tr -d '\\"'
podman info --format 'runtime={{.Host.OCIRuntime.Name}}'
"""

# The /etc/containers each case starts from, stated here rather than copied from the host:
# what an earlier set-up or package left on this machine must not decide the outcome.
POLICY = b'{"default": [{"type": "insecureAcceptAnything"}]}\n'
SITE_DROP_IN = b'[containers]\nlog_driver = "k8s-file"\n'
STARTING_TREES: dict[str, dict[str, bytes]] = {
    "a-fresh-machine-with-an-empty-etc-containers": {},
    "a-machine-with-the-users-own-containers-conf-and-drop-in": {
        "containers.conf": USERS_OWN,
        "policy.json": POLICY,
        "containers.conf.d/10-site.conf": SITE_DROP_IN,
    },
}


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under root: its bytes, mtime and inode (a rewrite changes the last two)."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.podman
@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace needs root")
@pytest.mark.parametrize("tree", list(STARTING_TREES), ids=list(STARTING_TREES))
def test_setup_sh_twice_in_a_private_etc_containers(tmp_path: Path, tree: str) -> None:
    fake_etc = tmp_path / "etc-containers"
    fake_etc.mkdir()
    for name, data in STARTING_TREES[tree].items():
        (fake_etc / name).parent.mkdir(parents=True, exist_ok=True)
        (fake_etc / name).write_bytes(data)
    before = snapshot(fake_etc)
    done = subprocess.run(
        ["unshare", "--mount", "bash", "-c", NAMESPACE_SCRIPT],
        cwd=REPO,
        env={**os.environ, "FAKE_ETC": str(fake_etc)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    after = snapshot(fake_etc)
    added = "containers.conf.d/50-vkrama.conf"
    # Set-up added its drop-in and nothing else, and left every file it found as it was.
    assert set(after) == set(before) | {added}
    assert {name: after[name] for name in before} == before
    assert done.stdout.count("setup: wrote /etc/containers/containers.conf.d/50-vkrama.conf") == 1
    nofile = int(subprocess.run(["bash", "-c", "ulimit -Hn"], capture_output=True).stdout)
    assert f"nofile={min(nofile, 65536)}" in done.stdout.splitlines()
    merged = [
        line
        for line in done.stdout.splitlines()
        if line.startswith("Merged system config /etc/containers/")
    ]
    assert merged == [f"Merged system config /etc/containers/{name}" for name in sorted(after)
                      if name.endswith(".conf")]  # fmt: skip
    assert merged[-1] == f"Merged system config /etc/containers/{added}"
    assert "runtime=runc" in done.stdout
