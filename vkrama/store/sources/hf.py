"""Hugging Face: `hf://ORG/REPO/FILE.gguf` and `hf://ORG/REPO:QUANT`.

Stage: store source (ModelRef ─► RemoteFile). Reuses files already in the standard Hugging
Face cache (see `hf_cache`) without any request; otherwise picks files through the tree API
and reads each file's sha256, size and commit from the resolve endpoint's
`X-Linked-Etag`/`X-Linked-Size`/`X-Repo-Commit`, and names the cache slot each file is put in
once verified, so huggingface_hub and llama.cpp find it too. The endpoint is
`models.hf_endpoint` (HF_ENDPOINT). The token (HF_TOKEN or the token file) goes into request
headers only: must never be printed or stored. Must not print.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from vkrama.config import Settings
from vkrama.errors import ExitStatus, VkramaError
from vkrama.store import names
from vkrama.store.hf_cache import CacheSlot, hf_home, repo_dir, snapshot
from vkrama.store.http import Http, json_of
from vkrama.store.refs import SPLIT, ModelRef, split_parts
from vkrama.store.transfer import RemoteFile

# The order llama.cpp's -hf falls back through when no quantization is named.
DEFAULT_QUANTS = ("Q4_K_M", "Q4_0", "Q8_0")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def token(environ: Mapping[str, str]) -> str | None:
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if environ.get(var):
            return environ[var].strip()
    path = Path(environ.get("HF_TOKEN_PATH") or hf_home(environ) / "token").expanduser()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def remote_files(
    settings: Settings, ref: ModelRef, http: Http | None
) -> tuple[list[RemoteFile], str]:
    """What to fetch for `ref`; with `http=None` (offline) only the Hugging Face cache is used."""
    cached = _from_cache(settings.environ, ref)
    if cached is not None:
        return cached
    if http is None:
        raise VkramaError(
            f"{ref.name} is not in the store or the Hugging Face cache, and vkrama is offline",
            hint="pull it once without --offline",
            status=ExitStatus.OFFLINE,
        )
    endpoint = str(settings["models.hf_endpoint"]).rstrip("/")
    secret = token(settings.environ)
    auth = {"Authorization": f"Bearer {secret}"} if secret else {}
    wanted = split_parts(ref.file) if ref.file else _pick(http, endpoint, ref, auth)
    files, commit = [], ref.revision
    for name in wanted:
        url = f"{endpoint}/{ref.repo}/resolve/{quote(ref.revision)}/{quote(name)}"
        head = http.request("HEAD", url, auth, what=f"{ref.repo}/{name}", allow_redirects=False)
        source = f"{endpoint} (for {ref.repo}/{name})"
        etag, trusted = _etag(head.headers, source)
        size = head.headers.get("X-Linked-Size") or head.headers.get("Content-Length")
        if "X-Repo-Commit" in head.headers:
            commit = names.commit(head.headers["X-Repo-Commit"], source)
        slot = None
        if trusted and "X-Repo-Commit" in head.headers:  # what huggingface_hub needs, too
            slot = CacheSlot(repo_dir(settings.environ, ref.repo), ref.revision, commit, name, etag)
        files.append(
            RemoteFile(
                PurePosixPath(name).name, url,
                sha256=etag.lower() if SHA256.match(etag.lower()) else None,
                size=int(size) if size and size.isascii() and size.isdigit() else None,
                headers=auth,  # requests drops it when a redirect leaves the endpoint's host
                # A blob the cache holds under another commit is reused, as huggingface_hub does.
                local=slot.blob if slot is not None and slot.blob.is_file() else None,
                hf_slot=slot,
            )
        )  # fmt: skip
    return files, f"{endpoint}/{ref.repo}@{commit}"


def _etag(headers: Mapping[str, str], source: str) -> tuple[str, bool]:
    """The file's etag, and whether it may name a blob in the Hugging Face cache.

    X-Linked-Etag is Hugging Face's own and must be a hash; a plain ETag (a mirror, a proxy)
    may be anything, and names no cache blob unless it is one.
    """
    linked = headers.get("X-Linked-Etag")
    if linked is not None:
        return names.etag(linked.removeprefix("W/").strip('"'), source), True
    etag = (headers.get("ETag") or "").removeprefix("W/").strip('"')
    return etag, bool(names.ETAG.fullmatch(etag))


def _pick(http: Http, endpoint: str, ref: ModelRef, auth: Mapping[str, str]) -> list[str]:
    url = f"{endpoint}/api/models/{ref.repo}/tree/{quote(ref.revision)}?recursive=true"
    entries = json_of(
        http.request("GET", url, auth, what=f"{ref.repo} file list"), list,
        f"{endpoint}: the file list of {ref.repo}",
        "check models.hf_endpoint (HF_ENDPOINT): it must speak Hugging Face's API",
    )  # fmt: skip
    source = f"{endpoint}'s file list for {ref.repo}"
    paths = [
        names.repo_path(e.get("path"), source)
        for e in entries
        if isinstance(e, dict) and e.get("type") == "file"
    ]
    chosen = choose_file(paths, ref.tag)
    if chosen is None:
        wanted = f"{ref.tag} GGUF" if ref.tag else "GGUF file"
        ggufs = sorted({_quant_of(p) for p in paths if p.endswith(".gguf")} - {""})
        raise VkramaError(
            f"{ref.repo} has no {wanted}",
            hint=f"quantizations there: {', '.join(ggufs) or 'none'}",
            status=ExitStatus.NOT_FOUND,
        )
    folder = str(PurePosixPath(chosen).parent)
    prefix = "" if folder == "." else f"{folder}/"
    return [prefix + p for p in split_parts(PurePosixPath(chosen).name)]


def choose_file(paths: list[str], quant: str) -> str | None:
    """The GGUF for `quant` (first part if split); without one, the first of DEFAULT_QUANTS."""
    ggufs = sorted(p for p in paths if p.endswith(".gguf") and "mmproj" not in p.lower())
    for wanted in (quant,) if quant else (*DEFAULT_QUANTS, ""):
        hits = [p for p in ggufs if not wanted or _quant_of(p) == wanted.upper()]
        firsts = [p for p in hits if _part_index(p) in (None, 1)]
        if firsts:
            return firsts[0]
    return None


def _quant_of(path: str) -> str:
    name = PurePosixPath(path).name
    match = SPLIT.match(name)
    stem = match["stem"] if match else name.removesuffix(".gguf")
    found = re.search(r"(?:^|[-._])((?:I?Q\d\w*?|F16|BF16|F32))$", stem, re.IGNORECASE)
    return found.group(1).upper() if found else ""


def _part_index(path: str) -> int | None:
    match = SPLIT.match(PurePosixPath(path).name)
    return int(match["index"]) if match else None


def _from_cache(environ: Mapping[str, str], ref: ModelRef) -> tuple[list[RemoteFile], str] | None:
    found = snapshot(environ, ref.repo, ref.revision)
    if found is None:
        return None
    folder, commit = found
    if ref.file:
        wanted = split_parts(ref.file)
    else:
        present = [str(p.relative_to(folder)) for p in folder.rglob("*.gguf")]
        chosen = choose_file(present, ref.tag)
        if chosen is None:
            return None
        parent = str(PurePosixPath(chosen).parent)
        prefix = "" if parent == "." else f"{parent}/"
        wanted = [prefix + p for p in split_parts(PurePosixPath(chosen).name)]
    files = []
    for name in wanted:
        path = folder / name
        if not path.is_file():
            return None
        blob = path.resolve().name  # the blob is named by its etag: sha256 for LFS files
        files.append(
            RemoteFile(
                PurePosixPath(name).name, path.as_uri(),
                sha256=blob if SHA256.match(blob) else None,
                size=path.stat().st_size, local=path,
            )
        )  # fmt: skip
    return files, f"{ref.repo}@{commit} (Hugging Face cache)"
