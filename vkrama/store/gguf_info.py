"""What a GGUF file says about itself: architecture, quantization, size, context length, name.

Stage: store (model ref ─► LocalModel). Reads only the header, after the GGUF spec: the
`gguf` package's GGUFReader builds a numpy view per tokenizer string (1.4-2.1 s and a
0.2 s import for a 32k vocabulary, against ~0.01 s here), so it is the tests' reference,
not the reader. Must not print, must not touch the network, never modifies the file and
never reads tensor data. Every file the store publishes has passed `read()`: its header
parses and its tensors fit the file, so a model in `vkrama list` is known to be whole GGUF.
Over 300 lines because it follows the GGUF spec's value types one by one.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

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


def layer_counts(path: Path) -> tuple[int | None, int]:
    """(layers, experts per MoE layer: 0 for a dense model) from a model that `read` has
    already accepted: what `vkrama tune` ranges -ngl and -ncmoe over."""
    with open(path, "rb") as f:
        fields = _parse(f, os.fstat(f.fileno()).st_size).fields
    arch = str(fields.get("general.architecture") or "")
    return _int_or_none(fields.get(f"{arch}.block_count")), int(
        fields.get(f"{arch}.expert_count") or 0
    )


def _read_one(path: Path, label: str, truncated_hint: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            header = _parse(f, os.fstat(f.fileno()).st_size)
    except _NotGguf:
        raise VkramaError(
            f"{label} is not a GGUF file (no GGUF magic at its start)",
            hint="vkrama runs llama.cpp models: give a .gguf file or a repository that has one",
            status=ExitStatus.INVALID_MODEL,
        ) from None
    except _Unsupported as unsupported:
        raise VkramaError(
            f"{label} is GGUF version {unsupported}, which llama.cpp does not read",
            hint="convert or download the model again with a current llama.cpp (GGUF 2 or 3)",
            status=ExitStatus.INVALID_MODEL,
        ) from None
    except _Damaged as damaged:
        # The magic is right, so the usual cause is a download cut short.
        raise VkramaError(
            f"{label} is truncated or damaged: {damaged}",
            hint=truncated_hint,
            status=ExitStatus.INCOMPLETE,
        ) from None
    if header.end > header.size:
        raise VkramaError(
            f"{label} is truncated: the header describes {header.end} bytes,"
            f" the file has {header.size}",
            hint=truncated_hint,
            status=ExitStatus.INCOMPLETE,
        )
    fields = header.fields
    arch = str(fields.get("general.architecture") or "unknown")
    name = fields.get("general.name")
    return {
        "architecture": arch,
        "quantization": _quantization_name(fields.get("general.file_type")),
        "context_length": _int_or_none(fields.get(f"{arch}.context_length")),
        "name": None if name is None else str(name),
        "params": header.parameter_count,
        "tensors": header.tensor_count,
        "split_count": _int_or_none(fields.get("split.count")) or 1,
    }


# ─── The header itself, after the GGUF specification (ggml/docs/gguf.md) ───────────────────
#
# magic "GGUF", u32 version, u64 tensor count, u64 KV count; each KV: string key, u32 value
# type, value; each tensor info: string name, u32 n_dims, u64 dims[n_dims], u32 ggml type,
# u64 offset into the data section, which starts at the next multiple of general.alignment.
# Strings are a u64 length and UTF-8 bytes; an array is a u32 item type, a u64 count, items.
# Arrays (the tokenizer's 32k+ strings) are skipped by their lengths, never materialised.

VERSIONS = (2, 3)  # version 1 counted with u32; llama.cpp reads 2 and 3
DEFAULT_ALIGNMENT = 32
WINDOW = 1 << 20  # bytes read at a time: most headers fit in one
STRING, ARRAY = 8, 9
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
           12: "d"}  # fmt: skip  # value type -> struct format
# ggml tensor type -> (elements per block, bytes per block); an unknown (newer) type only
# leaves its tensor's size unchecked.
BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
          8: (32, 34), 9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144),
          13: (256, 176), 14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74),
          18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
          23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
          29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17),
          40: (64, 36), 41: (128, 18)}  # fmt: skip
# general.file_type -> llama.cpp's name for it (LLAMA_FTYPE_*, without MOSTLY_/ALL_)
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
              10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
              16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
              22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
              28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
              37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 1024: "GUESSED"}  # fmt: skip


class _NotGguf(Exception):
    pass


class _Unsupported(Exception):
    pass


class _Damaged(Exception):
    pass


@dataclass(frozen=True)
class Header:
    """What vkrama needs of one file's header: scalar KVs and the tensors' extent."""

    fields: dict[str, Any]  # scalar values only; arrays are skipped
    tensor_count: int
    parameter_count: int
    end: int  # where the last tensor's data ends (unknown types: where it starts)
    size: int  # of the file


class _Cursor:
    """Reads a file front to back through a window, so skipped arrays are never read."""

    def __init__(self, f: BinaryIO, size: int, order: str) -> None:
        self.f, self.size, self.order = f, size, order
        self.buf, self.base, self.pos = b"", 0, 0
        self.u32, self.u64 = struct.Struct(order + "I"), struct.Struct(order + "Q")

    def at(self, n: int) -> int:
        """Offset in `buf` of the next `n` bytes, reading them in if needed."""
        if self.pos + n > self.size:
            raise _Damaged("its GGUF header does not fit the file")
        if self.pos + n > self.base + len(self.buf):
            self.f.seek(self.pos)
            self.buf, self.base = self.f.read(max(n, WINDOW)), self.pos
            if len(self.buf) < n:  # the file shrank under us
                raise _Damaged("its GGUF header does not fit the file")
        return self.pos - self.base

    def unpack(self, fmt: struct.Struct) -> Any:
        at = self.at(fmt.size)
        self.pos += fmt.size
        return fmt.unpack_from(self.buf, at)[0]

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise _Damaged("its GGUF header does not fit the file")
        self.pos += n

    def string(self) -> str:
        n = self.unpack(self.u64)
        at = self.at(n)
        self.pos += n
        return self.buf[at : at + n].decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        u64, size = self.u64, self.size
        for _ in range(count):
            at = self.at(8)  # before reading self.buf: it may load a new window
            n = u64.unpack_from(self.buf, at)[0]
            self.pos += 8 + n
            if self.pos > size:
                raise _Damaged("its GGUF header does not fit the file")

    def skip_array(self, item: int, count: int) -> None:
        if item in SCALARS:
            self.skip(count * struct.calcsize(SCALARS[item]))
        elif item == STRING:
            self.check_count(count, 8)
            self.skip_strings(count)
        elif item == ARRAY:
            self.check_count(count, 12)
            for _ in range(count):
                sub = self.unpack(self.u32)
                self.skip_array(sub, self.unpack(self.u64))
        else:
            raise _Damaged(f"unknown GGUF array item type {item}")

    def check_count(self, count: int, least: int) -> None:
        """Refuse a count whose items (`least` bytes each at least) cannot fit the file."""
        if count * least > self.size - self.pos:
            raise _Damaged(f"its GGUF header counts {count} items, more than the file holds")


def _parse(f: BinaryIO, size: int) -> Header:
    start = f.read(8)
    if start[:4] != MAGIC:
        raise _NotGguf
    if len(start) < 8:
        raise _Damaged("its GGUF header does not fit the file")
    order = "<"
    (version,) = struct.unpack("<I", start[4:])
    if version & 0xFFFF == 0:  # written on a big-endian machine
        order, version = ">", struct.unpack(">I", start[4:])[0]
    if version not in VERSIONS:
        raise _Unsupported(version)
    cur = _Cursor(f, size, order)
    cur.pos = 8
    tensor_count, kv_count = cur.unpack(cur.u64), cur.unpack(cur.u64)
    cur.check_count(kv_count, 12)
    fields: dict[str, Any] = {}
    scalars = {t: struct.Struct(order + fmt) for t, fmt in SCALARS.items()}
    for _ in range(kv_count):
        key, vtype = cur.string(), cur.unpack(cur.u32)
        if vtype in scalars:
            fields[key] = cur.unpack(scalars[vtype])
        elif vtype == STRING:
            fields[key] = cur.string()
        elif vtype == ARRAY:
            item = cur.unpack(cur.u32)
            cur.skip_array(item, cur.unpack(cur.u64))
        else:
            raise _Damaged(f"unknown GGUF value type {vtype} for {key}")
    alignment = fields.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _Damaged(f"general.alignment {alignment!r} is not a power of two")
    cur.check_count(tensor_count, 24)
    params, extents = 0, []
    for _ in range(tensor_count):
        cur.string()  # the tensor's name
        n_dims = cur.unpack(cur.u32)
        cur.check_count(n_dims, 8)
        dims = struct.Struct(f"{order}{n_dims}Q")
        at = cur.at(dims.size)
        elements = math.prod(dims.unpack_from(cur.buf, at))
        cur.pos += dims.size
        ggml_type, offset = cur.unpack(cur.u32), cur.unpack(cur.u64)
        block, nbytes = BLOCKS.get(ggml_type, (1, 0))
        params += elements
        extents.append(offset + elements * nbytes // block)
    data = -(-cur.pos // alignment) * alignment
    end = data + max(extents) if extents else 0
    return Header(fields, tensor_count, params, end, size)


def _quantization_name(file_type: Any) -> str:
    if file_type is None:
        return "unknown"
    return FILE_TYPES.get(int(file_type), f"type{int(file_type)}")


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
