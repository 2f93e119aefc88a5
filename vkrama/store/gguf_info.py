"""What a GGUF file says about itself: architecture, quantization, size, context length, name.

Stage: store (model ref ─► LocalModel). Reads headers with ggml-org's `gguf` package; must
not print, must not touch the network, never modifies the file. Every file the store
publishes has passed `read()`, so a model in `vkrama list` is known to be whole GGUF.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vkrama.errors import ExitStatus, VkramaError

MAGIC = b"GGUF"


@dataclass(frozen=True)
class GgufInfo:
    """Header facts of one model (all parts of a split model together)."""

    architecture: str
    quantization: str  # from general.file_type, e.g. "Q4_0", "F16"; "unknown" if absent
    parameter_count: int
    context_length: int | None
    name: str | None
    tensor_count: int = 0
    split_count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GgufInfo:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def is_gguf(path: Path) -> bool:
    """True when the file starts with the GGUF magic."""
    with open(path, "rb") as f:
        return f.read(4) == MAGIC


# What a truncated file's hint says depends on whose file it is.
DOWNLOAD_DISCARDED = "the source's copy is cut short; it was discarded, try again later"
USER_FILE_KEPT = "vkrama left the file as it is: finish or repeat the copy or download that made it"


def read(
    path: Path,
    extra_parts: tuple[Path, ...] = (),
    labels: Mapping[Path, str] | None = None,
    *,
    truncated_hint: str = DOWNLOAD_DISCARDED,
) -> GgufInfo:
    """Parse `path` (and the other parts of a split model); raise INVALID_MODEL or INCOMPLETE.

    `labels` names files in messages (a download in progress has no meaningful name);
    `truncated_hint` is the hint for a cut-short file (a pull discards its download, a
    user's own file is kept).
    """
    labels = labels or {}
    first = _read_one(path, labels.get(path, path.name), truncated_hint)
    params, tensors = first["params"], first["tensors"]
    for part in extra_parts:
        other = _read_one(part, labels.get(part, part.name), truncated_hint)
        params += other["params"]
        tensors += other["tensors"]
    return GgufInfo(
        architecture=first["architecture"],
        quantization=first["quantization"],
        parameter_count=params,
        context_length=first["context_length"],
        name=first["name"],
        tensor_count=tensors,
        split_count=first["split_count"],
    )


def _read_one(path: Path, label: str, truncated_hint: str) -> dict[str, Any]:
    import gguf  # imported here: numpy + gguf cost ~0.2 s, and `list` reads cached facts

    if not is_gguf(path):
        raise VkramaError(
            f"{label} is not a GGUF file (no GGUF magic at its start)",
            hint="vkrama runs llama.cpp models: give a .gguf file or a repository that has one",
            status=ExitStatus.INVALID_MODEL,
        )
    size = path.stat().st_size
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, OSError):
        # The magic is right, so the usual cause is a download cut short.
        raise VkramaError(
            f"{label} is truncated or damaged: its GGUF header does not fit the file",
            hint=truncated_hint,
            status=ExitStatus.INCOMPLETE,
        ) from None
    end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise VkramaError(
            f"{label} is truncated: the header describes {end} bytes, the file has {size}",
            hint=truncated_hint,
            status=ExitStatus.INCOMPLETE,
        )

    def field(key: str) -> Any:
        found = reader.fields.get(key)
        return None if found is None else found.contents()

    arch = str(field("general.architecture") or "unknown")
    file_type = field("general.file_type")
    return {
        "architecture": arch,
        "quantization": _quantization_name(file_type),
        "context_length": _int_or_none(field(f"{arch}.context_length")),
        "name": field("general.name"),
        "params": sum(int(t.n_elements) for t in reader.tensors),
        "tensors": len(reader.tensors),
        "split_count": _int_or_none(field("split.count")) or 1,
    }


def _quantization_name(file_type: Any) -> str:
    import gguf

    if file_type is None:
        return "unknown"
    try:
        name = gguf.LlamaFileType(int(file_type)).name
    except ValueError:
        return f"type{int(file_type)}"
    # MOSTLY_Q4_K_M -> Q4_K_M, ALL_F32 -> F32
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
