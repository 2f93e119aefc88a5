"""The disk is a failure source: a full file system or a read-only VKRAMA_HOME.

Real small file systems (tmpfs, mounted by the test: we are root here; without the right to
mount, the tests skip and say so). A pull that fills the disk, over HTTP or copying a local
file from another file system, and a pull or bench into a read-only home must each end in
one `Error:` line naming the place, exit code DISK, no traceback, and leave no partial or
temporary file behind.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from store_servers import LoopbackServer, Resource

from vkrama.errors import ExitStatus

MiB = 1 << 20


def mount_tmpfs(where: Path, size: str, *, read_only: bool = False) -> None:
    where.mkdir(parents=True, exist_ok=True)
    source = f"vkrama-test-{uuid.uuid4().hex[:8]}"
    command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", source, str(where)]
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
