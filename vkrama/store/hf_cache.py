"""The standard Hugging Face cache, the one huggingface_hub and llama.cpp share: find and fill.

Stage: store (source side of `hf://`). Layout of one repository under the hub cache
(`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`):

    models--ORG--REPO/blobs/ETAG                 the file, named by its etag (sha256 for LFS)
    models--ORG--REPO/snapshots/COMMIT/PATH      relative symlink to ../../blobs/ETAG
    models--ORG--REPO/refs/REVISION              the commit REVISION pointed at

Every write is a temporary name renamed into place, so another tool reading the cache at the
same time sees a file whole or not at all. Only verified files are put here (the caller
checks sha256 and GGUF first). Must not print and must not touch the network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vkrama.store import names

# The cache directory tag (https://bford.info/cachedir/) huggingface_hub writes too, so that
# backup tools skip the cache.
CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by vkrama for the Hugging Face cache.\n"
    "# For information about cache directory tags, see:\n"
    "#\thttps://bford.info/cachedir/\n"
)


def hf_home(environ: Mapping[str, str]) -> Path:
    if environ.get("HF_HOME"):
        return Path(environ["HF_HOME"]).expanduser()
    cache = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "huggingface"


def hub_cache(environ: Mapping[str, str]) -> Path:
    if environ.get("HF_HUB_CACHE"):
        return Path(environ["HF_HUB_CACHE"]).expanduser()
    return hf_home(environ) / "hub"


def repo_dir(environ: Mapping[str, str], repo: str) -> Path:
    return hub_cache(environ) / f"models--{repo.replace('/', '--')}"


def snapshot(environ: Mapping[str, str], repo: str, revision: str) -> tuple[Path, str] | None:
    """The snapshot folder for `revision` (a branch, tag or commit) and its commit, if cached."""
    folder = repo_dir(environ, repo)
    ref = folder / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    found = folder / "snapshots" / commit
    return (found, commit) if found.is_dir() else None


@dataclass(frozen=True)
class CacheSlot:
    """Where one file of one commit goes in the cache."""

    repo_dir: Path
    revision: str  # what the user asked for: branch, tag or commit
    commit: str  # what the server resolved it to (X-Repo-Commit)
    path: str  # inside the repository, "/"-separated
    etag: str  # X-Linked-Etag (sha256 for LFS files), quotes and W/ removed

    @property
    def blob(self) -> Path:
        return self.repo_dir / "blobs" / self.etag

    @property
    def pointer(self) -> Path:
        return self.repo_dir / "snapshots" / self.commit / self.path

    def fill(self, verified: Path) -> None:
        """Make the cache hold `verified` here: blob (hard link, else copy), pointer, ref.

        Raises OSError when the cache cannot be written (e.g. a read-only shared cache), and
        VkramaError before writing anything when a path would leave the repository's folder.
        """
        for path in (self.blob, self.pointer, self.repo_dir / "refs" / self.revision):
            names.inside(self.repo_dir, path)
        if not self.blob.exists():
            _place_blob(verified, self.blob)
        target = os.path.relpath(self.blob, self.pointer.parent)
        if not (self.pointer.is_symlink() and os.readlink(self.pointer) == target):
            self.pointer.parent.mkdir(parents=True, exist_ok=True)
            staged = self.pointer.with_name(f".{self.pointer.name}.{uuid.uuid4().hex[:8]}.tmp")
            os.symlink(target, staged)
            os.replace(staged, self.pointer)
        if self.revision != self.commit:  # a commit needs no ref, as in huggingface_hub
            ref = self.repo_dir / "refs" / self.revision
            if not ref.is_file() or ref.read_text() != self.commit:
                ref.parent.mkdir(parents=True, exist_ok=True)
                staged = ref.with_name(f"{ref.name}.{uuid.uuid4().hex[:8]}.tmp")
                staged.write_text(self.commit)
                os.replace(staged, ref)
        tag = self.repo_dir.parent / "CACHEDIR.TAG"
        if not tag.exists():
            with contextlib.suppress(OSError):
                tag.write_text(CACHEDIR_TAG)


def _place_blob(verified: Path, blob: Path) -> None:
    # The ".incomplete" suffix is how huggingface_hub names a blob not yet complete, so a
    # leftover (power cut between link and rename) reads as such to its cache tools.
    blob.parent.mkdir(parents=True, exist_ok=True)
    staged = blob.with_name(f"{blob.name}.{uuid.uuid4().hex[:8]}.incomplete")
    try:
        try:
            os.link(verified, staged)  # same file system: one copy of the bytes for both stores
        except OSError:
            shutil.copyfile(verified, staged)
            os.chmod(staged, 0o644)
        os.replace(staged, blob)
    finally:
        staged.unlink(missing_ok=True)
