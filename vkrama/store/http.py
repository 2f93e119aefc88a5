"""Plain `https://` and `http://` model URLs.

Stage: store source (ModelRef ─► RemoteFile). Asks nothing of the server before the download
itself; the digest to verify is the user's `--sha256`, if given. Must not print.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from vkrama.store.download import RemoteFile
from vkrama.store.refs import ModelRef, split_parts


def remote_files(ref: ModelRef, sha256: str | None) -> tuple[list[RemoteFile], str]:
    """The file at the URL, and the other parts when it names part 1 of a split GGUF."""
    url = ref.url.split("?", 1)[0]
    filename = PurePosixPath(unquote(urlsplit(url).path)).name or "model.gguf"
    parts = split_parts(filename)
    if len(parts) == 1:
        return [RemoteFile(filename, ref.url, sha256=sha256)], url
    base = url[: len(url) - len(filename)]
    # --sha256 names the file the user gave, i.e. the first part.
    files = [RemoteFile(p, base + p, sha256=sha256 if p == filename else None) for p in parts]
    return files, url
