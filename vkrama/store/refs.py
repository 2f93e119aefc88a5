"""Model references: `hf://`, `ollama://`, `oci://`, `http(s)://`, `file://`, paths, short names.

Stage: store, first step (text ─► ModelRef). Pure parsing: must not touch the network or
the file system beyond asking whether a plain path exists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vkrama.errors import ExitStatus, VkramaError
from vkrama.store import names

# A few well-known names; users add theirs under [models.shortnames] in vkrama.toml.
SHORTNAMES: dict[str, str] = {
    "tinyllama": "hf://TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:Q4_K_M",
    "qwen2.5:0.5b": "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
    "llama3.2:1b": "hf://bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
    "smollm2": "hf://bartowski/SmolLM2-360M-Instruct-GGUF:Q4_K_M",
}

SCHEMES = ("hf", "ollama", "oci", "http", "https", "file")


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference. `name` is the canonical text the store files it under."""

    scheme: str  # one of SCHEMES
    name: str
    host: str = ""  # registry host (oci, ollama); empty: the configured default
    repo: str = ""  # ORG/REPO (hf), NAMESPACE/MODEL (ollama), REPOSITORY (oci)
    tag: str = ""  # hf: quantization; ollama/oci: tag or sha256:digest
    file: str = ""  # hf: file inside the repository
    revision: str = "main"  # hf only
    url: str = ""  # http(s)
    path: Path | None = None  # file


def parse(text: str, shortnames: Mapping[str, str] | None = None) -> ModelRef:
    """Parse a reference; short names are looked up in `shortnames`, then SHORTNAMES."""
    text = text.strip()
    table = {**SHORTNAMES, **(shortnames or {})}
    if text in table:
        return parse(table[text], {})
    scheme, sep, rest = text.partition("://")
    if not sep:
        return _plain(text, table)
    scheme = {"huggingface": "hf", "hf.co": "hf"}.get(scheme.lower(), scheme.lower())
    if scheme == "hf":
        return _hf(rest, text)
    if scheme == "ollama":
        return _ollama(rest, text)
    if scheme == "oci":
        return _oci(rest, text)
    if scheme in ("http", "https"):
        return ModelRef(scheme, text, url=text)
    if scheme == "file":
        path = Path(rest).expanduser().absolute()
        return ModelRef("file", f"file://{path}", path=path)
    raise _bad(text, f"unknown scheme {scheme}://")


def _plain(text: str, table: Mapping[str, str]) -> ModelRef:
    path = Path(text).expanduser()
    if path.exists() or text.startswith(("/", "./", "../", "~")) or text.endswith(".gguf"):
        path = path.absolute()
        return ModelRef("file", f"file://{path}", path=path)
    known = ", ".join(sorted(table)) or "none"
    raise VkramaError(
        f"{text!r} is neither a file nor a known short name",
        hint=f"use hf://ORG/REPO:QUANT, ollama://NAME, oci://REGISTRY/REPO:TAG, a URL or a path;"
        f" short names: {known} (add yours under [models.shortnames])",
        status=ExitStatus.NOT_FOUND,
    )


def _hf(rest: str, text: str) -> ModelRef:
    rest, _, revision = rest.partition("@")
    parts = rest.split("/")
    if len(parts) < 2 or not all(parts):
        raise _bad(text, "hf:// needs ORG/REPO")
    org, repo = parts[0], parts[1]
    revision = names.revision(revision or "main", _source(text))
    if len(parts) > 2:
        file = names.repo_path("/".join(parts[2:]), _source(text))
        for name in (org, repo):
            names.hf_name(name, _source(text))
        return ModelRef("hf", _hf_name(org, repo, "/" + file, revision), repo=f"{org}/{repo}",
                        file=file, revision=revision)  # fmt: skip
    repo, _, quant = repo.partition(":")
    for name in (org, repo):
        names.hf_name(name, _source(text))
    suffix = f":{quant.upper()}" if quant else ""
    return ModelRef("hf", _hf_name(org, repo, suffix, revision), repo=f"{org}/{repo}",
                    tag=quant.upper(), revision=revision)  # fmt: skip


def _hf_name(org: str, repo: str, suffix: str, revision: str) -> str:
    at = "" if revision == "main" else f"@{revision}"
    return f"hf://{org}/{repo}{suffix}{at}"


def _split_tag(rest: str) -> tuple[str, str]:
    if "@" in rest:
        repo, _, digest = rest.partition("@")
        return repo, digest
    head, _, last = rest.rpartition("/")
    last, _, tag = last.partition(":")
    return (f"{head}/{last}" if head else last), tag


def _ollama(rest: str, text: str) -> ModelRef:
    repo, tag = _split_tag(rest)
    parts = repo.split("/")
    host = ""
    if len(parts) >= 3 or (len(parts) == 2 and _looks_like_host(parts[0])):
        host, parts = parts[0], parts[1:]
    if len(parts) == 1:
        parts = ["library", *parts]
    if not all(parts) or not re.fullmatch(r"[\w./-]+", "/".join(parts)):
        raise _bad(text, "ollama:// needs NAME[:TAG]")
    repo = names.repository("/".join(parts), _source(text))
    tag = names.tag(tag or "latest", _source(text))
    shown = f"{host}/{repo}" if host else repo.removeprefix("library/")
    sep = "@" if tag.startswith("sha256:") else ":"
    return ModelRef("ollama", f"ollama://{shown}{sep}{tag}", host=host, repo=repo, tag=tag)


def _oci(rest: str, text: str) -> ModelRef:
    host, _, rest = rest.partition("/")
    repo, tag = _split_tag(rest)
    if not host or not repo:
        raise _bad(text, "oci:// needs REGISTRY/REPOSITORY[:TAG]")
    names.repository(repo, _source(text))
    tag = names.tag(tag or "latest", _source(text))
    sep = "@" if tag.startswith("sha256:") else ":"
    return ModelRef("oci", f"oci://{host}/{repo}{sep}{tag}", host=host, repo=repo, tag=tag)


def _looks_like_host(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


def _source(text: str) -> str:
    return f"the model reference {text!r}"


def _bad(text: str, why: str) -> VkramaError:
    return VkramaError(
        f"cannot read model reference {text!r}: {why}",
        hint="forms: hf://ORG/REPO[:QUANT] or hf://ORG/REPO/FILE.gguf, ollama://NAME[:TAG],"
        " oci://REGISTRY/REPO[:TAG], https://URL, file://PATH or a path",
        status=ExitStatus.USAGE,
    )


SPLIT = re.compile(r"^(?P<stem>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


def split_parts(filename: str) -> list[str]:
    """All part names of a split GGUF (`x-00001-of-00003.gguf`), or just `filename`."""
    match = SPLIT.match(filename)
    if match is None:
        return [filename]
    count = int(match["count"])
    return [f"{match['stem']}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
