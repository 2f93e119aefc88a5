"""The store remembers sha256 and GGUF facts of models given by path, and trusts them only
while the file's (path, device, inode, size, mtime) stay the same."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vkrama import config
from vkrama.errors import ExitStatus, VkramaError
from vkrama.store import GgufInfo, blobs, file_index, gguf_info, resolve
from vkrama.store.blobs import Store, StoredFile

pulling = importlib.import_module("vkrama.store.pull")  # `store.pull` is also a function
HOUR_NS = 3600 * 10**9


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def set_mtime(path: Path, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def model(tiny_model: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model, last written an hour ago (not "racily clean")."""
    copy = tmp_path / "mine.gguf"
    shutil.copyfile(tiny_model, copy)
    set_mtime(copy, time.time_ns() - HOUR_NS)
    return copy


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file the store hashes or parses, in order."""
    seen: list[Path] = []
    real_hash, real_read = blobs.file_sha256, gguf_info.read

    def counting_hash(path: Path) -> str:
        seen.append(path)
        return real_hash(path)

    def counting_read(path: Path, *args: object, **kwargs: object) -> GgufInfo:
        seen.append(path)
        return real_read(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pulling, "file_sha256", counting_hash)
    monkeypatch.setattr(gguf_info, "read", counting_read)
    return seen


def flip_last_byte(path: Path) -> None:
    """Change the content (a tensor byte, so it stays valid GGUF), keeping size and mtime."""
    before = path.stat()
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_second_resolve_of_an_unchanged_file_reads_neither_its_bytes_nor_its_header(
    model: Path, hashed: list[Path]
) -> None:
    settings = config.load()
    first = resolve(settings, str(model))
    assert first.sha256 == sha256(model)
    assert hashed == [model, model]  # parsed once, hashed once
    hashed.clear()

    # Same size, same mtime, same inode: the index answers without opening the file, so
    # the changed bytes go unnoticed (which is what proves nothing read them).
    flip_last_byte(model)
    second = resolve(settings, str(model))
    assert (hashed, second.sha256, second.metadata) == ([], first.sha256, first.metadata)
    assert second.sha256 != sha256(model)

    # A new mtime is a change: hashed again, and the new digest is remembered.
    set_mtime(model, model.stat().st_mtime_ns + 10**9)
    third = resolve(settings, str(model))
    assert third.sha256 == sha256(model) != first.sha256
    assert hashed == [model, model]
    hashed.clear()
    assert resolve(settings, str(model)).sha256 == third.sha256
    assert hashed == []


def _append(path: Path) -> None:
    mtime = path.stat().st_mtime_ns
    with open(path, "ab") as f:
        f.write(b"\0" * 32)
    set_mtime(path, mtime)  # only the size tells


def _replace_by_rename(path: Path) -> None:
    """A new file (new inode) with the same size and mtime, renamed over the old one."""
    mtime = path.stat().st_mtime_ns
    other = path.with_suffix(".new")
    shutil.copyfile(path, other)
    flip_last_byte(other)
    set_mtime(other, mtime)
    os.replace(other, path)


def _rewrite_now(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))  # a fresh mtime, same size


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(_append, id="a-longer-file-with-the-old-mtime-is-rehashed"),
        pytest.param(_replace_by_rename, id="a-file-renamed-over-it-with-size-and-mtime-kept"),
        pytest.param(_rewrite_now, id="a-file-rewritten-in-place-just-now-is-rehashed"),
    ],
)
def test_an_edited_file_is_rehashed(
    model: Path, hashed: list[Path], edit: Callable[[Path], None]
) -> None:
    settings = config.load()
    before = resolve(settings, str(model)).sha256
    hashed.clear()
    edit(model)
    after = resolve(settings, str(model))
    assert after.sha256 == sha256(model) != before
    assert after.size == model.stat().st_size
    assert model in hashed


def test_a_file_written_moments_ago_is_hashed_but_not_remembered(
    tiny_model: Path, tmp_path: Path, hashed: list[Path]
) -> None:
    # Within the same mtime tick a later write could leave size and mtime unchanged.
    fresh = tmp_path / "fresh.gguf"
    shutil.copyfile(tiny_model, fresh)
    settings = config.load()
    assert resolve(settings, str(fresh)).sha256 == sha256(fresh)
    assert resolve(settings, str(fresh)).sha256 == sha256(fresh)
    assert hashed.count(fresh) == 4  # parsed and hashed, twice


def index_path() -> Path:
    return Path(os.environ["VKRAMA_HOME"]) / "models" / file_index.INDEX


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(b"", id="an-empty-index"),
        pytest.param(b'{"version": 1, "files": {', id="a-torn-index"),
        pytest.param(b"\xff\xfe not json at all", id="bytes-that-are-not-json"),
        pytest.param(b'{"version": 99, "files": {}, "models": {}}', id="a-future-version"),
        pytest.param(b'{"version": 1, "files": [], "models": 3}', id="an-index-of-the-wrong-shape"),
    ],
)  # fmt: skip
def test_a_damaged_index_is_ignored_and_rebuilt(
    model: Path, hashed: list[Path], damage: bytes
) -> None:
    settings = config.load()
    resolve(settings, str(model))
    index_path().write_bytes(damage)
    hashed.clear()
    assert resolve(settings, str(model)).sha256 == sha256(model)
    assert hashed == [model, model]
    rebuilt = json.loads(index_path().read_text())
    assert rebuilt["files"][str(model.resolve())]["sha256"] == sha256(model)
    hashed.clear()
    resolve(settings, str(model))
    assert hashed == []


def test_entries_with_wrong_types_are_misses_not_crashes(model: Path, hashed: list[Path]) -> None:
    settings = config.load()
    resolve(settings, str(model))
    data = json.loads(index_path().read_text())
    key = str(model.resolve())
    data["files"][key]["sha256"] = 12
    data["models"][key]["metadata"] = "?"
    index_path().write_text(json.dumps(data))
    hashed.clear()
    assert resolve(settings, str(model)).sha256 == sha256(model)
    assert hashed == [model, model]


def test_a_symlink_and_the_file_share_one_entry(model: Path, hashed: list[Path]) -> None:
    link = model.parent / "link.gguf"
    link.symlink_to(model)
    settings = config.load()
    resolve(settings, str(model))
    hashed.clear()
    linked = resolve(settings, str(link))
    assert (hashed, linked.path, linked.sha256) == ([], link, sha256(model))


def test_a_stored_model_resolves_by_name_without_hashing_or_parsing(
    model: Path, hashed: list[Path]
) -> None:
    store = Store(config.load().home)
    digest = sha256(model)
    with store.adding_blobs():
        store.add_blob(model, digest, move=False)
    info = gguf_info.read(model)
    store.publish("hf://org/repo/mine.gguf", "hf", "test", [StoredFile("mine.gguf", digest,
                  model.stat().st_size)], info)  # fmt: skip
    hashed.clear()
    found = resolve(config.load(), "hf://org/repo/mine.gguf")
    assert (hashed, found.sha256, found.metadata) == ([], digest, info)


def test_a_truncated_file_of_the_users_is_kept_and_the_hint_says_so(
    model: Path, tmp_path: Path
) -> None:
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])
    with pytest.raises(VkramaError) as caught:
        resolve(config.load(), str(model))
    error = caught.value
    assert error.status == ExitStatus.INCOMPLETE
    assert "truncated" in error.message
    assert error.hint is not None and "discarded" not in error.hint
    assert "left the file as it is" in error.hint
    assert model.stat().st_size == len(data) // 2
    assert not index_path().exists() or str(model.resolve()) not in index_path().read_text()


WARM_ENSURE = """
import sys, time
from vkrama import config, store
settings = config.load()
start = time.perf_counter()
model = store.ensure(settings, sys.argv[1])
took = time.perf_counter() - start
print(model.sha256, "gguf" in sys.modules, "numpy" in sys.modules, took)
"""


def ensure_in_a_new_process(path: Path) -> tuple[str, bool, bool]:
    done = subprocess.run([sys.executable, "-c", WARM_ENSURE, str(path)], env=os.environ,
                          capture_output=True, text=True, check=True)  # fmt: skip
    digest, gguf, numpy, _ = done.stdout.split()
    return digest, gguf == "True", numpy == "True"


def test_a_warm_ensure_in_a_new_process_imports_neither_gguf_nor_numpy(model: Path) -> None:
    # gguf_info reads headers itself: even the cold ensure, which parses, imports neither.
    assert ensure_in_a_new_process(model) == (sha256(model), False, False)
    assert ensure_in_a_new_process(model) == (sha256(model), False, False)


def test_processes_remembering_files_at_once_lose_none_of_them(
    tiny_model: Path, tmp_path: Path
) -> None:
    copies = []
    for i in range(4):
        copy = tmp_path / f"copy{i}.gguf"
        shutil.copyfile(tiny_model, copy)
        set_mtime(copy, time.time_ns() - HOUR_NS)
        copies.append(copy)
    running = [
        subprocess.Popen([sys.executable, "-c", WARM_ENSURE, str(c)], stdout=subprocess.PIPE)
        for c in copies
    ]
    assert [p.wait() for p in running] == [0] * 4
    for p in running:
        assert p.stdout is not None
        p.stdout.close()
    remembered = json.loads(index_path().read_text())
    assert sorted(remembered["files"]) == sorted(str(c.resolve()) for c in copies)
    assert sorted(remembered["models"]) == sorted(str(c.resolve()) for c in copies)
    assert not [p for p in index_path().parent.iterdir() if p.name.startswith(".")]
