"""Names that reach the file system, checked against what their format allows.

Stage: store (guards between sources and disk). A model reference comes from the user, and
commits, etags, file lists, digests and layer titles come from a server that may be hostile:
any of them could carry `..`, an absolute path, a backslash or a NUL byte and make a cache
path point outside the store. Every such value passes one of the checks below before a path
is built from it, and `inside` checks each final path as a second line of defence. A
violation is `ExitStatus.UNSAFE_NAME`, raised before anything is written. Pure: must not touch
the network and must not write.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from vkrama.errors import ExitStatus, VkramaError

COMMIT = re.compile(r"[0-9a-f]{40}")  # a git commit (SHA-1), as X-Repo-Commit sends it
# An etag names a blob in the Hugging Face cache: the sha256 of an LFS file or the git blob
# SHA-1 of a small one.
ETAG = re.compile(r"[0-9a-f]{64}|[0-9a-f]{40}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")  # the only digest vkrama can verify
# OCI distribution spec: a tag, and one path component of a repository name.
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
REPO_COMPONENT = re.compile(r"[A-Za-z0-9]+(?:(?:[._]|__|-+)[A-Za-z0-9]+)*")
# Hugging Face organisation and repository names.
HF_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")


def unsafe(what: str, value: object, why: str, source: str) -> VkramaError:
    return VkramaError(
        f"{source} gave an unsafe {what} {_shown(value)}: {why}; nothing was written",
        hint="a name that could leave vkrama's store is refused; if the source is yours,"
        " fix it, otherwise do not trust it",
        status=ExitStatus.UNSAFE_NAME,
    )


def commit(value: object, source: str) -> str:
    if not isinstance(value, str) or not COMMIT.fullmatch(value):
        raise unsafe("commit", value, "a commit is 40 hex characters", source)
    return value


def etag(value: object, source: str) -> str:
    if not isinstance(value, str) or not ETAG.fullmatch(value):
        raise unsafe("etag", value, "an etag is a sha256 or a git SHA-1 in hex", source)
    return value


def digest(value: object, source: str) -> str:
    """A `sha256:<64 hex>` digest; returns the hex part."""
    if not isinstance(value, str) or not DIGEST.fullmatch(value):
        raise unsafe("digest", value, "a digest here is sha256:<64 lowercase hex>", source)
    return value.removeprefix("sha256:")


def tag(value: str, source: str) -> str:
    """An OCI tag or a digest, as it goes into a manifest URL and a file name."""
    if value.startswith("sha256:"):
        digest(value, source)
    elif not TAG.fullmatch(value):
        raise unsafe("tag", value, "a tag is letters, digits, '.', '_', '-' (128 at most)", source)
    return value


def repository(value: str, source: str) -> str:
    """An OCI/Ollama repository name: components of [a-z0-9] joined by . _ __ -, split by /."""
    if not value or not all(REPO_COMPONENT.fullmatch(c) for c in value.split("/")):
        raise unsafe("repository", value, "each part is letters and digits joined by . _ -",
                     source)  # fmt: skip
    return value


def hf_name(value: str, source: str) -> str:
    """A Hugging Face organisation or repository name."""
    if not HF_NAME.fullmatch(value) or ".." in value:
        raise unsafe("repository name", value, "letters, digits, '-', '_', '.' only", source)
    return value


def revision(value: str, source: str) -> str:
    """A git branch, tag or commit: it names a file under refs/ in the Hugging Face cache."""
    why = _path_problem(value)
    if why is None and any(c.startswith(".") or c.endswith(".lock") for c in value.split("/")):
        why = "no part of a git ref starts with '.' or ends with '.lock'"
    if why is not None:
        raise unsafe("revision", value, why, source)
    return value


def repo_path(value: object, source: str) -> str:
    """A file inside a repository: a relative POSIX path that stays inside it."""
    why = _path_problem(value) if isinstance(value, str) else "not text"
    if why is not None:
        raise unsafe("file path", value, why, source)
    assert isinstance(value, str)
    return value


def file_name(value: object, source: str) -> str:
    """One file name (no folder), as the store's snapshots hold it."""
    why = _path_problem(value) if isinstance(value, str) else "not text"
    if why is None and "/" in str(value):
        why = "a file name has no '/'"
    if why is not None:
        raise unsafe("file name", value, why, source)
    assert isinstance(value, str)
    return value


def inside(root: Path, path: Path) -> Path:
    """`path`, after checking it lies inside `root` once symlinks and `..` are resolved.

    The last component is not followed: it may be a symlink vkrama is about to replace.
    """
    real_root = root.resolve()
    real = path.parent.resolve() / path.name
    if path.name in ("", ".", "..") or not real.is_relative_to(real_root):
        raise unsafe("path", str(path), f"it is not inside {real_root}", "vkrama")
    return path


def _path_problem(value: str) -> str | None:
    """Why `value` is not a safe relative POSIX path (checked as given and percent-decoded)."""
    for form in dict.fromkeys((value, unquote(value))):
        if not form:
            return "it is empty"
        if len(form.encode()) > 1024:
            return "it is too long"
        if any(ord(c) < 0x20 or c == "\x7f" for c in form):
            return "it holds a control character (NUL, newline, ...)"
        if "\\" in form:
            return "it holds a backslash"
        if form.startswith("/") or re.match(r"[A-Za-z]:", form):
            return "it is absolute"
        parts = form.split("/")
        if any(p in ("", ".", "..") for p in parts):
            return "it has an empty, '.' or '..' part"
    return None


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return ascii(text[:80] + ("..." if len(text) > 80 else ""))
