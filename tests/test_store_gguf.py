"""gguf_info's header-only reader agrees with the `gguf` package's GGUFReader and refuses
cut-short or garbled headers with the right exit status."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import cast

import examplemodel
import gguf
import numpy as np
import pytest

from vkrama.errors import ExitStatus, VkramaError
from vkrama.store import gguf_info


def reference(*paths: Path) -> dict[str, object]:
    """What GGUFReader says about the model whose parts are `paths`, in GgufInfo's terms."""
    readers = [gguf.GGUFReader(p) for p in paths]

    def field(key: str) -> object:
        found = readers[0].fields.get(key)
        return None if found is None else found.contents()

    arch = str(field("general.architecture"))
    file_type = gguf.LlamaFileType(cast(int, field("general.file_type")))
    return {
        "architecture": arch,
        "name": field("general.name"),
        "quantization": file_type.name.removeprefix("MOSTLY_").removeprefix("ALL_"),
        "parameter_count": sum(int(t.n_elements) for r in readers for t in r.tensors),
        "context_length": field(f"{arch}.context_length"),
        "tensor_count": sum(len(r.tensors) for r in readers),
        "split_count": field("split.count") or 1,
    }


def ours(*paths: Path) -> dict[str, object]:
    info = gguf_info.read(paths[0], paths[1:]).to_dict()
    return {k: info[k] for k in reference(*paths)}


def handmade(path: Path, endian: gguf.GGUFEndian, alignment: int) -> Path:
    """A small GGUF with every value type, nested arrays and two tensor types."""
    writer = gguf.GGUFWriter(path, "llama", endianess=endian)
    writer.add_name("handmade")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_context_length(512)
    writer.add_custom_alignment(alignment)
    writer.add_uint8("x.u8", 7)
    writer.add_int64("x.i64", -5)
    writer.add_float64("x.f64", 0.5)
    writer.add_bool("x.bool", True)
    writer.add_array("x.strings", ["a", "bc", "déf"])
    writer.add_array("x.floats", [1.0, 2.0])
    writer.add_array("x.nested", [[1, 2], [3]])
    writer.add_tensor("a", np.arange(96, dtype=np.float32).reshape(3, 32))
    if endian == gguf.GGUFEndian.LITTLE:  # the writer swaps only plain types' bytes
        q8_0 = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor("b", np.zeros((2, 34), dtype=np.uint8), raw_dtype=q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_tiny_model_reads_as_gguf_reader_reads_it(tiny_model: Path) -> None:
    assert ours(tiny_model) == reference(tiny_model)


def test_a_split_model_reads_as_gguf_reader_reads_it(tmp_path: Path) -> None:
    examplemodel.write(tmp_path / "split.gguf", "tiny", seed=1, split_max_tensors=20)
    parts = sorted(tmp_path.glob("split-*-of-*.gguf"))
    assert len(parts) == 2
    assert ours(*parts) == reference(*parts)
    assert gguf_info.read(parts[0], tuple(parts[1:])).split_count == 2


@pytest.mark.parametrize(
    ("endian", "alignment"),
    [
        pytest.param(gguf.GGUFEndian.LITTLE, 64, id="little-endian-aligned-to-64"),
        pytest.param(gguf.GGUFEndian.BIG, 32, id="big-endian-aligned-to-32"),
    ],
)
def test_every_value_type_reads_as_gguf_reader_reads_it(
    tmp_path: Path, endian: gguf.GGUFEndian, alignment: int
) -> None:
    model = handmade(tmp_path / "hand.gguf", endian, alignment)
    assert ours(model) == reference(model)
    header = gguf_info._parse(model.open("rb"), model.stat().st_size)
    reader = gguf.GGUFReader(model)
    assert header.end == max(t.data_offset + int(t.n_bytes) for t in reader.tensors)
    assert header.end <= model.stat().st_size  # the writer pads the last tensor
    assert (header.fields["x.u8"], header.fields["x.i64"], header.fields["x.bool"]) == (7, -5, True)
    assert "x.strings" not in header.fields  # arrays are skipped, not read


def test_the_name_tables_match_the_gguf_package() -> None:
    names = {
        int(t): t.name.removeprefix("MOSTLY_").removeprefix("ALL_") for t in gguf.LlamaFileType
    }
    assert names == gguf_info.FILE_TYPES
    assert {int(t): size for t, size in gguf.GGML_QUANT_SIZES.items()} == gguf_info.BLOCKS


def _patch(at: int, fmt: str, *values: int) -> Callable[[bytes], bytes]:
    def patch(data: bytes) -> bytes:
        packed = struct.pack(fmt, *values)
        return data[:at] + packed + data[at + len(packed) :]

    return patch


def _after(key: str, fmt: str, *values: int) -> Callable[[bytes], bytes]:
    """Overwrite what follows `key`: its u32 value type, then the value."""

    def patch(data: bytes) -> bytes:
        at = data.index(key.encode()) + len(key)
        return _patch(at, fmt, *values)(data)

    return patch


@pytest.mark.parametrize(
    ("damage", "status", "words"),
    [
        pytest.param(lambda d: b"", ExitStatus.INVALID_MODEL, "not a GGUF file",
                     id="an-empty-file-is-not-a-model"),
        pytest.param(lambda d: b"GGU", ExitStatus.INVALID_MODEL, "not a GGUF file",
                     id="three-bytes-are-not-a-model"),
        pytest.param(lambda d: b"<html>" + d, ExitStatus.INVALID_MODEL, "not a GGUF file",
                     id="no-magic-is-not-a-model"),
        pytest.param(lambda d: d[:6], ExitStatus.INCOMPLETE, "truncated",
                     id="cut-inside-the-version"),
        pytest.param(lambda d: d[:20], ExitStatus.INCOMPLETE, "truncated",
                     id="cut-inside-the-counts"),
        pytest.param(lambda d: d[:200], ExitStatus.INCOMPLETE, "truncated",
                     id="cut-inside-the-first-keys"),
        pytest.param(lambda d: d[:2000], ExitStatus.INCOMPLETE, "truncated",
                     id="cut-inside-the-tokenizer-array"),
        pytest.param(lambda d: d[: d.index(b"blk.0.attn_q")], ExitStatus.INCOMPLETE,
                     "truncated", id="cut-inside-the-tensor-infos"),
        pytest.param(lambda d: d[: len(d) // 2], ExitStatus.INCOMPLETE,
                     "the header describes", id="cut-in-the-tensor-data"),
        pytest.param(lambda d: d[:-1], ExitStatus.INCOMPLETE, "the header describes",
                     id="one-byte-short"),
        pytest.param(_patch(4, "<I", 1), ExitStatus.INVALID_MODEL, "version 1",
                     id="version-1-is-not-read"),
        pytest.param(_patch(4, "<I", 99), ExitStatus.INVALID_MODEL, "version 99",
                     id="a-future-version-is-not-read"),
        pytest.param(_patch(8, "<Q", 1 << 62), ExitStatus.INCOMPLETE, "more than the file",
                     id="an-absurd-tensor-count"),
        pytest.param(_patch(16, "<Q", 1 << 62), ExitStatus.INCOMPLETE, "more than the file",
                     id="an-absurd-key-count"),
        pytest.param(_patch(24, "<Q", 1 << 40), ExitStatus.INCOMPLETE, "does not fit",
                     id="an-absurd-key-length"),
        pytest.param(_after("general.architecture", "<I", 77), ExitStatus.INCOMPLETE,
                     "unknown GGUF value type 77", id="an-unknown-value-type"),
        pytest.param(_after("tokenizer.ggml.tokens", "<II", 9, 66), ExitStatus.INCOMPLETE,
                     "unknown GGUF array item type 66", id="an-unknown-array-item-type"),
        pytest.param(_after("tokenizer.ggml.tokens", "<IIQ", 9, 8, 1 << 40),
                     ExitStatus.INCOMPLETE, "more than the file", id="an-absurd-array-count"),
        pytest.param(_after("tokenizer.ggml.tokens", "<IIQQ", 9, 8, 2, 1 << 40),
                     ExitStatus.INCOMPLETE, "does not fit", id="an-absurd-string-in-an-array"),
    ],
)  # fmt: skip
def test_damaged_headers(
    tiny_model: Path,
    tmp_path: Path,
    damage: Callable[[bytes], bytes],
    status: ExitStatus,
    words: str,
) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(damage(tiny_model.read_bytes()))
    with pytest.raises(VkramaError) as caught:
        gguf_info.read(bad)
    assert caught.value.status == status
    assert words in caught.value.message
    assert caught.value.message.count("\n") == 0


@pytest.mark.parametrize(
    "alignment",
    [pytest.param(0, id="zero"), pytest.param(48, id="not-a-power-of-two")],
)
def test_a_bad_alignment_is_damage(tmp_path: Path, alignment: int) -> None:
    model = handmade(tmp_path / "hand.gguf", gguf.GGUFEndian.LITTLE, 64)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(_after("general.alignment", "<II", 4, alignment)(model.read_bytes()))
    with pytest.raises(VkramaError) as caught:
        gguf_info.read(bad)
    assert caught.value.status == ExitStatus.INCOMPLETE
    assert "not a power of two" in caught.value.message


def test_the_header_is_read_without_the_tensor_data(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[int] = []
    real = gguf_info._Cursor.at

    def counting(self: gguf_info._Cursor, n: int) -> int:
        before = self.buf
        at = real(self, n)
        if self.buf is not before:
            read.append(len(self.buf))
        return at

    monkeypatch.setattr(gguf_info, "WINDOW", 4096)
    monkeypatch.setattr(gguf_info._Cursor, "at", counting)
    gguf_info.read(tiny_model)
    assert 0 < sum(read) < tiny_model.stat().st_size // 10
