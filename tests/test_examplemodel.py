"""The example model loads in the real llama.cpp of the cpu image, F16 and quantized."""

from __future__ import annotations

import subprocess
from pathlib import Path

import examplemodel
import pytest

from vkrama.store import gguf_info


def _bench(model: Path) -> str:
    # The file is mounted, not its directory: pytest's 0700 temp dirs stop the image's uid 1000.
    done = subprocess.run(
        ["podman", "run", "--rm", "--network=none", "-v", f"{model}:/m/{model.name}:ro",
         examplemodel.CPU_IMAGE, "llama-bench", "-m", f"/m/{model.name}", "-p", "16", "-n", "4",
         "-r", "1", "-o", "json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.podman
@pytest.mark.slow
def test_tiny_model_runs_in_llama_bench(tiny_model: Path) -> None:
    assert '"n_gen": 4' in _bench(tiny_model)


@pytest.mark.podman
@pytest.mark.slow
def test_quantize_with_the_cpu_image_gives_a_q4_0_model(tmp_path: Path) -> None:
    out = examplemodel.make("tiny", tmp_path / "tiny-q4_0.gguf", seed=0, quantize_to="q4_0")
    info = gguf_info.read(out)
    assert info.quantization == "Q4_0"
    assert info.parameter_count == examplemodel.SHAPES["tiny"].parameter_count
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-q4_0.gguf"]  # no F16 left over
    assert '"n_gen": 4' in _bench(out)


def test_make_creates_missing_folders(tmp_path: Path) -> None:
    made = examplemodel.make("tiny", tmp_path / "new" / "folder" / "tiny.gguf")
    assert made.is_file() and made.stat().st_size > 1_000_000
