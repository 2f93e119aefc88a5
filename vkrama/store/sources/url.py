"""Plain `https://` and `http://` model URLs.

Stage: store source (ModelRef ─► RemoteFile). Asks nothing of the server before the download
itself; the digest to verify is the user's `--sha256`, if given. Must not print.
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

from vkrama.store import names
from vkrama.store.refs import ModelRef, split_parts
from vkrama.store.transfer import RemoteFile


def remote_files(ref: ModelRef, sha256: str | None) -> tuple[list[RemoteFile], str]:
    """The file at the URL, and the other parts when it names part 1 of a split GGUF."""
    url = ref.url.split("?", 1)[0]
    last = urlsplit(url).path.rsplit("/", 1)[-1]
    # The last segment, percent-decoded, names the file in the store: `..`, `%2e%2e`, `%2f`
    # or `%00` there must not reach the file system.
    filename = names.file_name(unquote(last), f"the URL {url!r}") if last else "model.gguf"
    parts = split_parts(filename)
    if len(parts) == 1:
        return [RemoteFile(filename, ref.url, sha256=sha256)], url
    base = url[: len(url) - len(last)]
    # --sha256 names the file the user gave, i.e. the first part.
    files = [
        RemoteFile(p, base + quote(p), sha256=sha256 if p == filename else None) for p in parts
    ]
    return files, url
