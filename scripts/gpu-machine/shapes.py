#!/usr/bin/env python3
"""The random-weight models the GPU machine benches, made there (no model hub is reachable).

Stage: outside vkrama's pipeline, like the rest of scripts/gpu-machine. Random weights run at
the speed of real ones of the same shape and quantization, so each model has a real model's
shape: llama-2-7B's (the llama.cpp scoreboards' model) as Q4_0, and Llama-3.1-8B's as Q4_K_M.
The F16 is written with examples/examplemodel.py (gguf, numpy) and quantized by llama-quantize
in the cuda image, through vkrama's engine; nothing else is needed.

    shapes.py 7b|8b OUT.gguf      write the F16 beside OUT, quantize it to OUT, print sizes
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
QUANTIZE_IMAGE = "localhost/vkrama/cuda:latest"  # the cpu image is not carried to the machine
# name, n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx; quantization
MODELS: dict[str, tuple[tuple[str, int, int, int, int, int, int, int], str]] = {
    # The llama.cpp scoreboard model: llama-2-7B's shape, 6.74 B parameters, Q4_0 3.8 GB.
    "7b": (("llama-2-7b-shape", 4096, 32, 32, 32, 11008, 32000, 4096), "q4_0"),
    # Llama-3.1-8B's shape (GQA 32/8, FFN 14336, 128256 tokens): 8.03 B parameters, Q4_K_M.
    # n_ctx 32768 so that depth 16384 plus pp512 fits the context llama-bench allocates.
    "8b": (("llama-3.1-8b-shape", 4096, 32, 32, 8, 14336, 128256, 32768), "q4_k_m"),
}
# A 128 Mi-element pool (256 MB of F16): drawn in ~1 s; bigger tensors repeat it.
POOL_ELEMENTS = 2**27


def make_model(kind: str, out: Path) -> str:
    sys.path.insert(0, str(REPO / "examples"))
    import examplemodel  # type: ignore[import-not-found]

    fields, quantization = MODELS[kind]
    shape = examplemodel.Shape(*fields)
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".f16-") as work:
        f16 = examplemodel.write(Path(work) / "f16.gguf", shape, pool_elements=POOL_ELEMENTS)
        wrote = time.monotonic()
        examplemodel.quantize(f16, out, quantization, image=QUANTIZE_IMAGE)
    return (
        f"{out}: {shape.parameter_count / 1e9:.2f} B parameters; F16 in {wrote - started:.0f} s,"
        f" {quantization} {out.stat().st_size / 1e9:.2f} GB in {time.monotonic() - wrote:.0f} s"
    )


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] in MODELS:
        print(make_model(argv[0], Path(argv[1])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
