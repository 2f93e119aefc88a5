"""The example model loads in the real llama.cpp of the cpu image, F16 and quantized."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import examplemodel
import pytest
from engine_fakes import NullEngine

from vkrama.engine import Completed, ContainerSpec
from vkrama.store import gguf_info


def _bench(model: Path, image: str) -> str:
    # The file is mounted, not its directory: pytest's 0700 temp dirs stop the image's uid 1000.
    done = subprocess.run(
        ["podman", "run", "--rm", "--network=none", "-v", f"{model}:/m/{model.name}:ro",
         image, "llama-bench", "-m", f"/m/{model.name}", "-p", "16", "-n", "4",
         "-r", "1", "-o", "json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.podman
@pytest.mark.slow
def test_tiny_model_runs_in_llama_bench(
    tiny_model: Path, backend_image: Callable[[str], str]
) -> None:
    assert '"n_gen": 4' in _bench(tiny_model, backend_image("cpu"))


@pytest.mark.podman
@pytest.mark.slow
def test_quantize_with_the_cpu_image_gives_a_q4_0_model(
    tmp_path: Path, backend_image: Callable[[str], str]
) -> None:
    image = backend_image("cpu")  # examplemodel quantizes with it
    out = examplemodel.make("tiny", tmp_path / "tiny-q4_0.gguf", seed=0, quantize_to="q4_0")
    info = gguf_info.read(out)
    assert info.quantization == "Q4_0"
    assert info.parameter_count == examplemodel.SHAPES["tiny"].parameter_count
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-q4_0.gguf"]  # no F16 left over
    assert '"n_gen": 4' in _bench(out, image)


def test_the_bpe_model_is_another_architecture_vocabulary_and_template(tmp_path: Path) -> None:
    made = examplemodel.make("tiny-bpe", tmp_path / "bpe.gguf")
    info = gguf_info.read(made)
    assert info.architecture == "qwen2"
    assert info.parameter_count == examplemodel.SHAPES["tiny-bpe"].parameter_count
    tokens, _, merges = examplemodel.bpe_vocabulary(2048)
    assert len(tokens) == 2048 and tokens[-1] == "<|eot_id|>"
    # Every merge joins two tokens the vocabulary has into one it has.
    known = set(tokens)
    assert all(left in known and right in known and left + right in known
               for left, right in (m.split(" ") for m in merges))  # fmt: skip


def test_make_creates_missing_folders(tmp_path: Path) -> None:
    made = examplemodel.make("tiny", tmp_path / "new" / "folder" / "tiny.gguf")
    assert made.is_file() and made.stat().st_size > 1_000_000


class Quantizer(NullEngine):
    """Runs llama-quantize as an engine would be asked to: writes what it names in /out."""

    def __init__(self, exit_code: int = 0) -> None:
        self.exit_code = exit_code
        self.specs: list[ContainerSpec] = []

    def complete(self, spec: ContainerSpec) -> Completed:
        self.specs.append(spec)
        (out,) = [m.source for m in spec.mounts if m.target == "/out"]
        if self.exit_code == 0:
            (out / spec.command[2].removeprefix("/out/")).write_bytes(b"quantized")
        return Completed(self.exit_code, "", "" if self.exit_code == 0 else "unknown type")


def test_quantize_runs_llama_quantize_through_the_engine_sealed_off(tmp_path: Path) -> None:
    src = tmp_path / "in" / "m-f16.gguf"
    src.parent.mkdir()
    src.write_bytes(b"f16")
    engine = Quantizer()
    out = examplemodel.quantize(src, tmp_path / "m-q4_0.gguf", "q4_0", engine=engine)
    assert out.read_bytes() == b"quantized"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "m-q4_0.gguf"]
    (spec,) = engine.specs
    argv = " ".join(spec.podman_argv())
    # No network, no capabilities, no privilege gain; uid 0 in the container is the
    # invoking user (rootless) or root, who owns the output folder (rootful as root).
    for flag in ("--network none", "--cap-drop all", "--security-opt no-new-privileges",
                 "--user 0:0", f"type=bind,src={src.parent},dst=/in,ro"):  # fmt: skip
        assert flag in argv
    assert spec.image == examplemodel.CPU_IMAGE
    assert spec.command[:4] == ("llama-quantize", "/in/m-f16.gguf", "/out/m-q4_0.gguf", "q4_0")


def test_a_failed_quantize_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "m-f16.gguf"
    src.write_bytes(b"f16")
    with pytest.raises(RuntimeError, match="exited 1: unknown type"):
        examplemodel.quantize(src, tmp_path / "m-q9.gguf", "q9", engine=Quantizer(exit_code=1))
    assert [p.name for p in tmp_path.iterdir()] == ["m-f16.gguf"]
