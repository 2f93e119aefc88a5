"""What vkrama already knows about GGUF files outside the store: sha256 and header facts.

Stage: store (plain path / file:// ─► LocalModel). A model given by path used to be hashed
and parsed on every `serve`, `bench` and `run`: seconds for a multi-GB file. This index
remembers, per file, its sha256 under a stat signature (resolved path, st_dev, st_ino,
st_size, st_mtime_ns) and, per model, its `GgufInfo`; a lookup stats the files and reads one
small JSON file, and imports neither gguf nor numpy. Any change of a signature is a miss.

On disk: `models/local-files.json` under VKRAMA_HOME. Readers take no lock (the file is only
ever replaced whole, by rename); writers merge their entries under an exclusive flock and
replace the file atomically, so concurrent vkrama processes never lose each other's entries
and never leave a torn file. A file that cannot be read or parsed counts as empty and is
rewritten by the next miss. Best effort throughout: an unwritable home only costs the hash.
Must not print, must not read model contents (the caller hashes and parses on a miss).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vkrama.store.blobs import Store, write_atomic
from vkrama.store.gguf_info import GgufInfo

INDEX = "local-files.json"
LOCK = "local-files"  # a lock name no model reference can take (they all have a scheme)
VERSION = 1
# A file whose mtime is this close to "now" may still be written within the same timestamp
# tick (1 s on some file systems, 2 s on FAT), leaving size and mtime unchanged: such a
# "racily clean" file is hashed but not remembered until it has been quiet for a while.
RACY_NS = 2_000_000_000
MAX_FILES = 512  # entries kept; the oldest go first


@dataclass(frozen=True)
class Signature:
    """What must stay the same for a remembered sha256 to still be the file's."""

    path: str  # resolved (symlinks followed), so two spellings share one entry
    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Signature:
        real = os.path.realpath(path)
        st = os.stat(real)
        return cls(real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def matches(self, entry: Any) -> bool:
        return isinstance(entry, dict) and all(
            entry.get(k) == getattr(self, k) for k in ("dev", "ino", "size", "mtime_ns")
        )


class FileIndex:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.path = store.root / INDEX

    def lookup(self, sigs: list[Signature]) -> tuple[tuple[str, ...], GgufInfo] | None:
        """Every part's sha256 and the model's facts, if all parts are unchanged; else None."""
        data = self._load()
        model = data["models"].get(sigs[0].path)
        if not isinstance(model, dict) or model.get("parts") != [s.path for s in sigs]:
            return None
        digests = tuple(self.sha256(s, data) for s in sigs)
        if any(d is None for d in digests):
            return None
        try:
            metadata = GgufInfo.from_dict(model["metadata"])
        except (KeyError, TypeError, ValueError):
            return None
        return tuple(d for d in digests if d is not None), metadata

    def sha256(self, sig: Signature, data: dict[str, Any] | None = None) -> str | None:
        """The remembered sha256 of an unchanged file, else None."""
        entry = (data or self._load())["files"].get(sig.path)
        digest = entry.get("sha256") if sig.matches(entry) else None
        return digest if isinstance(digest, str) and len(digest) == 64 else None

    def remember(self, sigs: list[Signature], digests: tuple[str, ...], metadata: GgufInfo) -> None:
        """Record files hashed just now; `sigs` are their signatures from before hashing."""
        now = time.time_ns()
        # A file that changed while it was hashed is not remembered: its digest may be torn.
        quiet = [s.mtime_ns < now - RACY_NS and _unchanged(s) for s in sigs]
        if not any(quiet):
            return
        with contextlib.suppress(OSError), self.store.lock(LOCK):
            data = self._load()
            files, models = data["files"], data["models"]
            for sig, digest, ok in zip(sigs, digests, quiet, strict=True):
                if ok:
                    files.pop(sig.path, None)  # re-inserted last: the newest entry
                    files[sig.path] = {**_stat_fields(sig), "sha256": digest}
            if all(quiet):
                models.pop(sigs[0].path, None)
                models[sigs[0].path] = {
                    "parts": [s.path for s in sigs],
                    "metadata": metadata.to_dict(),
                }
            _prune(files, models)
            write_atomic(self.path, json.dumps(data))

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = None
        ok = (
            isinstance(data, dict)
            and data.get("version") == VERSION
            and isinstance(data.get("files"), dict)
            and isinstance(data.get("models"), dict)
        )
        return data if ok else {"version": VERSION, "files": {}, "models": {}}


def _unchanged(sig: Signature) -> bool:
    try:
        return Signature.of(Path(sig.path)) == sig
    except OSError:
        return False


def _stat_fields(sig: Signature) -> dict[str, int]:
    return {"dev": sig.dev, "ino": sig.ino, "size": sig.size, "mtime_ns": sig.mtime_ns}


def _prune(files: dict[str, Any], models: dict[str, Any]) -> None:
    """Forget files that are gone, the oldest beyond MAX_FILES, and models missing a part."""
    for path in [p for p in files if not os.path.exists(p)]:
        del files[path]
    for path in list(files)[: max(0, len(files) - MAX_FILES)]:
        del files[path]
    for path, model in list(models.items()):
        parts = model.get("parts") if isinstance(model, dict) else None
        if not isinstance(parts, list) or not all(p in files for p in parts):
            del models[path]
