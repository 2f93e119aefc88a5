"""The disk is a failure source: a full file system or a read-only VKRAMA_HOME.

Real small file systems (tmpfs, mounted by the test: we are root here; without the right to
mount, the tests skip and say so). A pull that fills the disk, over HTTP or copying a local
file from another file system, and a pull or bench into a read-only home must each end in
one `Error:` line naming the place, exit code DISK, no traceback, and leave no partial or
temporary file behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from store_servers import LoopbackServer, Resource

from vkrama.backends import compile_cache
from vkrama.errors import ExitStatus, VkramaError

MiB = 1 << 20


def mount_tmpfs(where: Path, size: str, *, read_only: bool = False, inodes: int = 0) -> None:
    where.mkdir(parents=True, exist_ok=True)
    source = f"vkrama-test-{uuid.uuid4().hex[:8]}"
    options = f"size={size},mode=0755" + (f",nr_inodes={inodes}" if inodes else "")
    command = ["mount", "-t", "tmpfs", "-o", options, source, str(where)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr}")
    if read_only:
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


@pytest.fixture
def small_home(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB VKRAMA_HOME: smaller than the tiny model."""
    home = tmp_path / "small-home"
    mount_tmpfs(home, "2m")
    yield home
    subprocess.run(["umount", str(home)], check=False)


@pytest.fixture
def read_only_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "ro-home"
    mount_tmpfs(home, "2m", read_only=True)
    yield home
    subprocess.run(["umount", str(home)], check=False)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def assert_disk_error(result: object, where: Path) -> None:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == ExitStatus.DISK, stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(where) in errors[0], stderr


def test_http_pull_onto_a_full_disk_leaves_no_partial_file(
    vkrama: Callable[..., Any], small_home: Path, tiny_model: Path
) -> None:
    with LoopbackServer() as server:
        url = server.add("/files/tiny.gguf", Resource(body=tiny_model.read_bytes()))
        result = vkrama("pull", url, env={"VKRAMA_HOME": str(small_home)})
    assert_disk_error(result, small_home)
    assert "no space left" in result.stderr
    assert [f for f in files_under(small_home) if not f.startswith("models/locks/")] == []
    assert os.statvfs(small_home).f_bfree * os.statvfs(small_home).f_bsize > MiB, "space freed"


def test_local_file_copied_from_another_file_system_onto_a_full_disk(
    vkrama: Callable[..., Any], small_home: Path, tiny_model: Path
) -> None:
    result = vkrama("pull", str(tiny_model), env={"VKRAMA_HOME": str(small_home)})
    assert_disk_error(result, small_home)
    kept = ("models/locks/", "models/local-files.json")  # locks; hashes of the user's file
    leftovers = [f for f in files_under(small_home) if not f.startswith(kept)]
    assert leftovers == []
    assert not [p for p in (small_home / "models" / "blobs").iterdir()]


def test_pull_into_a_read_only_home(
    vkrama: Callable[..., Any], read_only_home: Path, tiny_model: Path
) -> None:
    with LoopbackServer() as server:
        url = server.add("/files/tiny.gguf", Resource(body=tiny_model.read_bytes()))
        result = vkrama("pull", url, env={"VKRAMA_HOME": str(read_only_home)})
        assert_disk_error(result, read_only_home)
        assert "read-only" in result.stderr
        assert server.bytes_served == 0, "nothing fetched that could not be kept"
    local = vkrama("pull", str(tiny_model), env={"VKRAMA_HOME": str(read_only_home)})
    assert_disk_error(local, read_only_home)


def test_bench_with_a_read_only_home(
    vkrama: Callable[..., Any], read_only_home: Path, tiny_model: Path
) -> None:
    result = vkrama("bench", str(tiny_model), "--backend", "cpu", "-p", "8", "-n", "4",
                    env={"VKRAMA_HOME": str(read_only_home)})  # fmt: skip
    assert_disk_error(result, read_only_home)
    assert "not writable" in result.stderr
    assert files_under(read_only_home) == []


def test_a_ranged_pull_onto_a_full_disk_fails_before_the_transfer(
    vkrama: Callable[..., Any], small_home: Path, ranged_model: Path
) -> None:
    with LoopbackServer() as server:
        url = server.add("/files/ranged.gguf", Resource(body=ranged_model.read_bytes()))
        result = vkrama("pull", url, env={"VKRAMA_HOME": str(small_home)})
        served = server.bytes_served
    assert_disk_error(result, small_home)
    assert "no space left" in result.stderr
    assert served <= MiB, "the partial file is preallocated: only the first probe was fetched"
    assert [f for f in files_under(small_home) if not f.startswith("models/locks/")] == []


def inodes_used(root: Path) -> int:
    fs = os.statvfs(root)
    return fs.f_files - fs.f_ffree


@pytest.mark.parametrize("short", [1, 2, 3], ids=lambda n: f"{n}-inode(s)-short-at-the-end")
def test_a_pull_that_cannot_publish_gives_its_blob_back(
    vkrama: Callable[..., Any], tmp_path: Path, tiny_model: Path, short: int
) -> None:
    """The file is fetched and verified, then the disk runs out of inodes for the last steps
    (snapshot links, the ref): no blob or snapshot stays behind that no ref names."""
    with LoopbackServer() as server:
        url = server.add("/files/tiny.gguf", Resource(body=tiny_model.read_bytes()))
        # A first pull into a roomy tmpfs counts the inodes a whole pull needs.
        probe = tmp_path / "probe"
        mount_tmpfs(probe, "64m")
        try:
            assert vkrama("pull", url, env={"VKRAMA_HOME": str(probe)}).returncode == 0
            needed = inodes_used(probe)
        finally:
            subprocess.run(["umount", str(probe)], check=False)
        home = tmp_path / "home"
        mount_tmpfs(home, "64m", inodes=needed - short)
        try:
            result = vkrama("pull", url, env={"VKRAMA_HOME": str(home)})
            assert server.bytes_served >= 2 * tiny_model.stat().st_size, "fetched before failing"
            assert_disk_error(result, home)
            assert "no space left" in result.stderr
            assert [f for f in files_under(home) if not f.startswith("models/locks/")] == []
        finally:
            subprocess.run(["umount", str(home)], check=False)


def as_nobody(action: Callable[[], object]) -> tuple[int, str]:
    """Run `action` in a forked child that has become `nobody` (uid and gid 65534, no
    groups), so that the kernel's permission checks apply as they do to a user; the
    VkramaError it raises as (status, message), or (0, "") when it raises none.

    Forked, not started anew: a new interpreter as nobody could not import vkrama from a
    checkout under a folder only root may enter (mktemp -d makes such folders)."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: never returns into pytest
        outcome = "0 "
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            action()
        except VkramaError as error:
            outcome = f"{int(error.status)} {error.message}"
        except BaseException as error:  # reported to the parent, whose asserts fail on it
            outcome = f"-1 {type(error).__name__}: {error}"
        os.write(write_end, outcome.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        said = reader.read().decode()
    os.waitpid(child, 0)
    status, message = said.split(" ", 1)
    return int(status), message


@pytest.fixture
def roots_folder() -> Iterator[Path]:
    """A folder root owns that every user may enter and read, but not write."""
    # Not under pytest's tmp_path: its parents are root's alone (0700).
    folder = Path(tempfile.mkdtemp(prefix="vkrama-roots-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.parametrize("enter", [True, False], ids=["home-not-writable", "home-not-enterable"])
def test_a_compile_cache_the_user_may_not_create_is_a_disk_error(
    roots_folder: Path, enter: bool
) -> None:
    """A home another user owns (EACCES, not a read-only file system): an error that names
    the folder, with the DISK status, never a traceback."""
    shared = roots_folder / "shared"
    shared.mkdir(mode=0o755 if enter else 0o700)
    cache = compile_cache.for_backend(shared, "vulkan")
    assert cache is not None
    status, message = as_nobody(lambda: compile_cache.ensure(cache))
    assert int(status) == ExitStatus.DISK
    assert f"cannot write {shared}/cache{'' if enter else '/mesa'} (permission denied)" in message
    assert not (shared / "cache").exists()
