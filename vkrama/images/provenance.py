"""Provenance of an image: which llama.cpp, ggml and GPU stack a benchmark row ran on.

Stage: images (read side). Pure parsing of what the image recorded at build time: the
JSON file `provenance.sh` wrote inside it and the `vkrama.image.*` labels vkrama put on
it. Must not talk to podman, print or guess: a value the image did not record stays absent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from vkrama.errors import ExitStatus, VkramaError

LABEL_PREFIX = "vkrama.image."
PROVENANCE_PATH = "/usr/share/vkrama/provenance.json"

# The stack a backend's numbers depend on, as (provenance key, how a person names it).
STACK_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "cpu": (("ggml_version", "ggml"),),
    "vulkan": (("mesa", "Mesa"),),
    "rocm": (("hip", "HIP"), ("rocblas", "rocBLAS"), ("gfx_targets", "for")),
    "cuda": (("cuda", "CUDA"), ("cublas", "cuBLAS")),
    "oneapi": (("dpcpp", "DPC++"), ("mkl", "oneMKL"), ("sycl_module_version", "cyllama-sycl")),
}

# Label values and JSON keys are short identifiers; anything else did not come from us.
_KEY = re.compile(r"^[a-z0-9_]{1,64}$")
# "version: 11669 (0123abcd)" upstream; "version: 0.7.0 (build 11669, commit Debian)" Debian.
_DEBIAN_VERSION = re.compile(r"\bbuild (\d+)(?:, commit (\w+))?")
_UPSTREAM_VERSION = re.compile(r"^version: (\d+) \((\w+)\)")


def parse_llama_version(line: str) -> tuple[str | None, str | None]:
    """llama.cpp's build number and commit from the line `llama-cli --version` prints."""
    for pattern in (_DEBIAN_VERSION, _UPSTREAM_VERSION):
        match = pattern.search(line.strip())
        if match:
            return match.group(1), match.group(2)
    return None, None


def parse_provenance_json(text: str) -> dict[str, str]:
    """The provenance file's fields; empty and "unknown" values are dropped.

    A build number missing from the file is recovered from the raw version line.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise VkramaError(
            f"{PROVENANCE_PATH} in the image is not JSON: {error.msg} (line {error.lineno})",
            hint="rebuild the image with `vkrama images build --no-cache BACKEND`",
            status=ExitStatus.BUILD_FAILED,
        ) from None
    if not isinstance(data, dict):
        raise VkramaError(
            f"{PROVENANCE_PATH} in the image is not a JSON object",
            hint="rebuild the image with `vkrama images build --no-cache BACKEND`",
            status=ExitStatus.BUILD_FAILED,
        )
    fields = {
        str(key): str(value).strip()
        for key, value in data.items()
        if _KEY.match(str(key)) and isinstance(value, (str, int)) and _known(str(value))
    }
    build, commit = parse_llama_version(fields.get("llama_cpp_version", ""))
    if "llama_cpp_build" not in fields and build:
        fields["llama_cpp_build"] = build
    if "llama_cpp_commit" not in fields and commit:
        fields["llama_cpp_commit"] = commit
    return fields


def provenance_labels(fields: Mapping[str, str]) -> dict[str, str]:
    """Image labels that carry these provenance fields."""
    return {f"{LABEL_PREFIX}{key}": value for key, value in fields.items() if _KEY.match(key)}


def provenance_from_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """The provenance fields recorded in an image's labels (other labels are ignored)."""
    return {
        key.removeprefix(LABEL_PREFIX): value
        for key, value in (labels or {}).items()
        if key.startswith(LABEL_PREFIX)
        and _KEY.match(key.removeprefix(LABEL_PREFIX))
        and _known(value)
    }


def stack_version(provenance: Mapping[str, str]) -> str:
    """The backend's stack in a few words, e.g. "Mesa 26.2.6-1" or "CUDA 12.4 cuBLAS 12.4"."""
    keys = STACK_KEYS.get(provenance.get("backend", ""), ())
    parts = [f"{name} {provenance[key]}" for key, name in keys if provenance.get(key)]
    return ", ".join(parts) if parts else "-"


def _known(value: str) -> bool:
    return value.strip() not in ("", "unknown")
