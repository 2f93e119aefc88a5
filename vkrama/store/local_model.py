"""`LocalModel`: what the store hands every later stage, a verified GGUF model on this host.

Stage: store (model ref ─► store.resolve / store.pull ─► LocalModel). Made by the blob
store (`blobs.Store`, for stored models) and by `pull` (for a file given by path); read by
serve, bench and the CLI. Pure data: nothing here reads files, prints or fetches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vkrama.store.gguf_info import GgufInfo


@dataclass(frozen=True)
class LocalModel:
    """A model on this host, ready to mount: `path` is the (first) GGUF file."""

    name: str
    path: Path
    files: tuple[Path, ...]  # every part of a split GGUF, `path` first
    sha256: str  # of `path`
    size: int  # of all files together
    source: str  # hf, ollama, oci, http, https, file
    metadata: GgufInfo
    origin: str = ""  # where it was fetched from (URL, repository@commit)
    sha256s: tuple[str, ...] = ()  # one per file

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "origin": self.origin,
            "path": str(self.path),
            "files": [str(f) for f in self.files],
            "sha256": self.sha256,
            "sha256s": list(self.sha256s),
            "size": self.size,
            "metadata": self.metadata.to_dict(),
        }
