"""The model store on disk: content-addressed blobs plus named references.

Stage: store (verified files ─► LocalModel). Layout under `settings.home / "models"`:

    blobs/sha256-HEX           each distinct file once, read-only (a hard link to the same
                               file in the Hugging Face cache where there is one)
    snapshots/KEY/FILENAME     hard links to blobs with the file's real name (split GGUF
                               parts must sit side by side under their own names)
    refs/KEY.json              name, source, files, GGUF facts: what `vkrama list` shows
    partial/                   downloads in progress (kept for resuming)
    locks/KEY.lock             one puller per model (and per partial file) at a time;
                               locks/blobs.lock: garbage collection waits for blobs being added
    local-files.json           sha256 and GGUF facts of models given by path (file_index.py)

A model becomes visible only when its ref file is renamed into place, after its blobs
verified and parsed. Must not print and must not touch the network.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vkrama.errors import ExitStatus, VkramaError
from vkrama.store import names
from vkrama.store.gguf_info import GgufInfo
from vkrama.store.local_model import LocalModel

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
KEY = re.compile(r"[0-9a-f]{1,64}")
BLOBS_LOCK = "blobs"  # a name no model reference can take (they all have a scheme)


@dataclass(frozen=True)
class StoredFile:
    filename: str
    sha256: str
    size: int


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def key_for(name: str) -> str:
    """A short file-system-safe key for a model name."""
    return hashlib.sha256(name.encode()).hexdigest()[:24]


class Store:
    def __init__(self, home: Path) -> None:
        self.root = Path(home) / "models"

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def blob(self, sha256: str) -> Path:
        if not SHA256_HEX.fullmatch(sha256):  # callers check; this keeps the store's layout whole
            raise names.unsafe("blob digest", sha256, "a sha256 is 64 hex characters", "vkrama")
        return self.root / "blobs" / f"sha256-{sha256}"

    def partial(self, key: str) -> Path:
        if not KEY.fullmatch(key):
            raise names.unsafe("partial file key", key, "keys are hex", "vkrama")
        return self._dir("partial") / f"{key}.part"

    @contextlib.contextmanager
    def lock(self, name: str, *, shared: bool = False, wait: bool = True) -> Iterator[bool]:
        """Hold a lock on `name` (flock: released by the kernel if we are killed).

        Yields False, holding nothing, when `wait` is False and someone else has it.
        """
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        with open(self._dir("locks") / f"{key_for(name)}.lock", "a") as handle:
            try:
                fcntl.flock(handle, mode)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def adding_blobs(self) -> contextlib.AbstractContextManager[bool]:
        """Held (shared) from a blob's arrival until a ref names it, so no collection takes it."""
        return self.lock(BLOBS_LOCK, shared=True)

    def add_blob(self, src: Path, sha256: str, *, move: bool) -> Path:
        """Put a verified file into blobs/ (rename, else hard link, else copy); return it."""
        dst = self.blob(sha256)
        self._dir("blobs")
        if dst.exists():
            if move:
                src.unlink()
            return dst
        if move:
            os.chmod(src, 0o444)
            os.replace(src, dst)
            return dst
        with tempfile.TemporaryDirectory(dir=self.root / "blobs", prefix=".in-") as tmp:
            staged = Path(tmp) / "blob"
            try:
                os.link(src, staged)
            except OSError:  # another file system, or links not allowed
                shutil.copyfile(src, staged)
                os.chmod(staged, 0o444)
            os.replace(staged, dst)
        return dst

    def publish(
        self, name: str, source: str, origin: str, files: list[StoredFile], metadata: GgufInfo
    ) -> LocalModel:
        """Make `name` visible: snapshot links first, then the ref file by an atomic rename."""
        key = key_for(name)
        snapshots = self._dir("snapshots")
        for f in files:  # checked before anything is written
            names.file_name(f.filename, name)
            names.inside(snapshots, snapshots / key / f.filename)
        # The refs folder first: a disk too full for it must fail before anything is staged.
        ref = self._dir("refs") / f"{key}.json"
        fresh = not ref.exists()
        staged = Path(tempfile.mkdtemp(dir=snapshots, prefix=f".{key}-"))
        try:
            for f in files:
                os.link(self.blob(f.sha256), staged / f.filename)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        final = snapshots / key
        if final.exists():
            shutil.rmtree(final)
        os.replace(staged, final)
        record = {
            "name": name,
            "source": source,
            "origin": origin,
            "files": [vars(f) for f in files],
            "metadata": metadata.to_dict(),
            "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            write_atomic(ref, json.dumps(record, indent=1))
        except BaseException:
            if fresh:  # no record will ever name this snapshot
                shutil.rmtree(final, ignore_errors=True)
            raise
        model = self.get(name)
        assert model is not None
        return model

    def get(self, name: str) -> LocalModel | None:
        """The stored model called `name`; None when there is none. A record that exists
        but cannot be read is an error that says so, never "not in the store"."""
        path = self.root / "refs" / f"{key_for(name)}.json"
        if not path.exists():
            return None
        return self._read_ref(path, name)

    def models(self) -> list[LocalModel]:
        """Every stored model; a corrupt record is skipped here (`corrupt_refs` names it)."""
        out = []
        for path in sorted((self.root / "refs").glob("*.json")):
            with contextlib.suppress(VkramaError):
                out.append(self._read_ref(path, path.stem))
        return sorted(out, key=lambda m: m.name)

    def corrupt_refs(self) -> list[Path]:
        """Records `models` skipped because they cannot be read."""
        bad = []
        for path in sorted((self.root / "refs").glob("*.json")):
            try:
                self._read_ref(path, path.stem)
            except VkramaError:
                bad.append(path)
        return bad

    def _read_ref(self, path: Path, name: str) -> LocalModel:
        try:
            return self._model(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not a record vkrama wrote"
            raise VkramaError(
                f"{name}: the store's record {path} is corrupt ({why})",
                hint=f"`vkrama pull {name}` writes it again; or delete {path}",
                status=ExitStatus.INVALID_MODEL,
            ) from None

    def _model(self, record: dict[str, Any]) -> LocalModel:
        snapshot = self.root / "snapshots" / key_for(record["name"])
        files = [StoredFile(**f) for f in record["files"]]
        return LocalModel(
            name=record["name"],
            path=snapshot / files[0].filename,
            files=tuple(snapshot / f.filename for f in files),
            sha256=files[0].sha256,
            size=sum(f.size for f in files),
            source=record["source"],
            metadata=GgufInfo.from_dict(record["metadata"]),
            origin=record.get("origin", ""),
            sha256s=tuple(f.sha256 for f in files),
        )

    def remove(self, name: str) -> bool:
        """Forget `name`; delete blobs no other name uses. False if it was not there."""
        key = key_for(name)
        ref = self.root / "refs" / f"{key}.json"
        if not ref.exists():
            return False
        ref.unlink()
        shutil.rmtree(self.root / "snapshots" / key, ignore_errors=True)
        self.collect_garbage()
        return True

    def collect_garbage(self) -> None:
        """Delete blobs no ref names; skipped (left for next time) while a pull adds blobs."""
        # Reference counting by refs, not by link count: a blob may also be linked from the
        # Hugging Face cache or from the user's file it was imported from.
        with self.lock(BLOBS_LOCK, wait=False) as alone:
            if not alone:
                return
            used: set[str] = set()
            for path in (self.root / "refs").glob("*.json"):
                try:
                    used.update(f["sha256"] for f in json.loads(path.read_text())["files"])
                except (OSError, ValueError, KeyError, TypeError):
                    return  # one unreadable ref: better keep every blob than lose its files
            for blob in (self.root / "blobs").glob("sha256-*"):
                if blob.name.removeprefix("sha256-") not in used:
                    blob.unlink()


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` whole (temp file, fsync, rename): readers see the old or the new text."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # a full disk must not leave temp files behind
        raise
