"""`LocalModel`: what the store hands every later stage, a verified GGUF model on this host.

Stage: store (model ref ─► store.resolve / store.pull ─► LocalModel). Made by the blob
store (`blobs.Store`, for stored models) and by `pull` (for a file given by path); read by
serve, bench and the CLI. Pure data: nothing here reads files, prints or fetches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vkrama.store.gguf_info import GgufInfo


@dataclass(frozen=True)
class LocalModel:
    """A model on this host, ready to mount: `path` is the (first) GGUF file."""

    # In the order `list --json` and `inspect` show them (cli.console.to_json).
    name: str
    source: str  # hf, ollama, oci, http, https, file
    origin: str  # where it was fetched from (URL, repository@commit, the file's path)
    path: Path
    files: tuple[Path, ...]  # every part of a split GGUF, `path` first
    sha256: str  # of `path`
    sha256s: tuple[str, ...]  # one per file
    size: int  # of all files together
    metadata: GgufInfo
