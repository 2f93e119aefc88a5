"""Model references, file picking and GGUF facts: pure functions, table-driven."""

from __future__ import annotations

from pathlib import Path

import examplemodel
import pytest

from vkrama.errors import ExitStatus, VkramaError
from vkrama.store import gguf_info, refs
from vkrama.store.sources import hf


@pytest.mark.parametrize(
    ("text", "scheme", "name", "fields"),
    [
        pytest.param("hf://TheOrg/Model-GGUF/model-Q4_0.gguf", "hf",
                     "hf://TheOrg/Model-GGUF/model-Q4_0.gguf",
                     {"repo": "TheOrg/Model-GGUF", "file": "model-Q4_0.gguf"},
                     id="hf-with-a-file-names-that-file"),
        pytest.param("hf://TheOrg/Model-GGUF:q4_k_m", "hf", "hf://TheOrg/Model-GGUF:Q4_K_M",
                     {"repo": "TheOrg/Model-GGUF", "tag": "Q4_K_M", "file": ""},
                     id="hf-with-a-quant-upper-cases-it"),
        pytest.param("hf://o/r:Q8_0@v2", "hf", "hf://o/r:Q8_0@v2", {"revision": "v2"},
                     id="hf-revision-after-at"),
        pytest.param("huggingface://o/r", "hf", "hf://o/r", {"tag": ""},
                     id="huggingface-scheme-is-hf"),
        pytest.param("ollama://tinyllama", "ollama", "ollama://tinyllama:latest",
                     {"repo": "library/tinyllama", "tag": "latest", "host": ""},
                     id="ollama-defaults-to-library-and-latest"),
        pytest.param("ollama://me/model:7b", "ollama", "ollama://me/model:7b",
                     {"repo": "me/model", "tag": "7b"}, id="ollama-user-namespace"),
        pytest.param("ollama://127.0.0.1:5000/x/y:1", "ollama", "ollama://127.0.0.1:5000/x/y:1",
                     {"host": "127.0.0.1:5000", "repo": "x/y"}, id="ollama-with-a-registry-host"),
        pytest.param("oci://quay.io/org/model:1.0", "oci", "oci://quay.io/org/model:1.0",
                     {"host": "quay.io", "repo": "org/model", "tag": "1.0"}, id="oci-with-tag"),
        pytest.param("oci://localhost:5000/m", "oci", "oci://localhost:5000/m:latest",
                     {"host": "localhost:5000", "repo": "m"}, id="oci-defaults-to-latest"),
        pytest.param("oci://r.io/m@sha256:" + "a" * 64, "oci", "oci://r.io/m@sha256:" + "a" * 64,
                     {"tag": "sha256:" + "a" * 64}, id="oci-by-digest"),
        pytest.param("https://x.org/a/m.gguf?download=1", "https",
                     "https://x.org/a/m.gguf?download=1", {}, id="https-url-kept-as-is"),
        pytest.param("file:///m/x.gguf", "file", "file:///m/x.gguf", {"path": Path("/m/x.gguf")},
                     id="file-url"),
        pytest.param("/m/x.gguf", "file", "file:///m/x.gguf", {}, id="absolute-path-is-a-file"),
        pytest.param("tinyllama", "hf", "hf://TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:Q4_K_M", {},
                     id="builtin-shortname-expands"),
    ],
)  # fmt: skip
def test_parse(text: str, scheme: str, name: str, fields: dict[str, object]) -> None:
    ref = refs.parse(text)
    assert (ref.scheme, ref.name) == (scheme, name)
    for key, value in fields.items():
        assert getattr(ref, key) == value


def test_configured_shortnames_win_over_builtin_ones() -> None:
    assert refs.parse("tinyllama", {"tinyllama": "ollama://tinyllama"}).scheme == "ollama"


@pytest.mark.parametrize(
    ("text", "status"),
    [
        pytest.param("no-such-model", ExitStatus.NOT_FOUND, id="unknown-short-name-is-refused"),
        pytest.param("hf://justorg", ExitStatus.USAGE, id="hf-without-repo-is-a-usage-error"),
        pytest.param("ftp://x/y.gguf", ExitStatus.USAGE, id="unknown-scheme-is-a-usage-error"),
    ],
)
def test_bad_references(text: str, status: ExitStatus) -> None:
    with pytest.raises(VkramaError) as caught:
        refs.parse(text)
    assert caught.value.status == status
    assert caught.value.hint


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        pytest.param("m.gguf", ["m.gguf"], id="single-file"),
        pytest.param("m-00001-of-00003.gguf",
                     ["m-00001-of-00003.gguf", "m-00002-of-00003.gguf", "m-00003-of-00003.gguf"],
                     id="split-names-every-part"),
    ],
)  # fmt: skip
def test_split_parts(name: str, parts: list[str]) -> None:
    assert refs.split_parts(name) == parts


REPO_FILES = [
    "README.md",
    "model-Q2_K.gguf",
    "model-Q4_K_M.gguf",
    "model-Q4_0.gguf",
    "mmproj-model-f16.gguf",
    "Q8_0/model-Q8_0-00001-of-00002.gguf",
    "Q8_0/model-Q8_0-00002-of-00002.gguf",
    "model.IQ4_XS.gguf",
]


@pytest.mark.parametrize(
    ("files", "quant", "chosen"),
    [
        pytest.param(REPO_FILES, "Q4_0", "model-Q4_0.gguf", id="named-quant"),
        pytest.param(REPO_FILES, "", "model-Q4_K_M.gguf", id="no-quant-prefers-q4-k-m"),
        pytest.param(REPO_FILES, "Q8_0", "Q8_0/model-Q8_0-00001-of-00002.gguf",
                     id="split-quant-picks-the-first-part"),
        pytest.param(REPO_FILES, "IQ4_XS", "model.IQ4_XS.gguf", id="dot-separated-quant"),
        pytest.param(REPO_FILES, "Q5_K_M", None, id="absent-quant-is-none"),
        pytest.param(["mmproj-f16.gguf", "x-F16.gguf"], "", "x-F16.gguf",
                     id="projector-files-are-never-picked"),
    ],
)  # fmt: skip
def test_choose_file(files: list[str], quant: str, chosen: str | None) -> None:
    assert hf.choose_file(files, quant) == chosen


def test_gguf_facts_of_the_tiny_model(tiny_model: Path) -> None:
    info = gguf_info.read(tiny_model)
    shape = examplemodel.SHAPES["tiny"]
    assert info.architecture == "llama"
    assert info.quantization == "F16"
    assert info.parameter_count == shape.parameter_count
    assert info.context_length == 2048
    assert info.name == "vkrama-tiny"


@pytest.mark.parametrize(
    ("cut", "status"),
    [
        pytest.param(lambda data: data[: len(data) // 2], ExitStatus.INCOMPLETE,
                     id="half-a-file-is-incomplete"),
        pytest.param(lambda data: data[:2000], ExitStatus.INCOMPLETE,
                     id="cut-inside-the-header-is-incomplete"),
        pytest.param(lambda data: b"<html>" + data, ExitStatus.INVALID_MODEL,
                     id="no-magic-is-not-a-model"),
    ],
)  # fmt: skip
def test_damaged_files(tiny_model: Path, tmp_path: Path, cut, status: ExitStatus) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(cut(tiny_model.read_bytes()))
    with pytest.raises(VkramaError) as caught:
        gguf_info.read(bad)
    assert caught.value.status == status


def test_examplemodel_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = examplemodel.write(tmp_path / "a.gguf", "tiny", seed=3).read_bytes()
    b = examplemodel.write(tmp_path / "b.gguf", "tiny", seed=3).read_bytes()
    c = examplemodel.write(tmp_path / "c.gguf", "tiny", seed=4).read_bytes()
    assert a == b
    assert a != c


def test_progress_line_shows_bytes_rate_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    from vkrama.cli.progress import ProgressLine
    from vkrama.progress import Download

    line = ProgressLine()
    line(Download("m.gguf", 0, 100 * 2**20))
    line.started -= 2.0  # two seconds later, 20 MiB in
    line.drawn = 0.0
    line(Download("m.gguf", 20 * 2**20, 100 * 2**20))
    line.close()
    shown = capsys.readouterr().err.split("\r")[-1]
    assert shown.startswith("m.gguf  20.0/100.0 MiB  10.0 MiB/s  ETA 0:00:08")


def test_inspect_reads_a_plain_gguf_path(vkrama, tiny_model: Path) -> None:  # type: ignore[no-untyped-def]
    import json

    result = vkrama("inspect", str(tiny_model), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["source"] == "file"
    assert data["path"] == str(tiny_model)
    assert data["metadata"]["context_length"] == 2048
