#!/usr/bin/env python3
"""Make a random-weight llama GGUF: `make_model.py tiny OUT.gguf` or `make_model.py bench OUT.gguf`.

tiny:  ~3.9 M parameters, F16, 1024-token SPM vocab, context 2048, chatml template (tests).
tiny-bpe: ~2 M parameters, F16, qwen2 architecture, 2048-token GPT-2 byte-level BPE vocab,
       Llama-3-style header template: another tokenizer and template for the same tests.
bench: ~0.66 B parameters, written in F16 then quantized to Q4_0 with llama-quantize from the
       cpu image via podman (`--quantize none` keeps the F16 and needs no podman).
The weights are deterministic for a `--seed`. The code lives in `examplemodel.py` beside this
script (a fixture for tests, the demo and benchmarks; not part of vkrama).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import examplemodel  # beside this script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(examplemodel.SHAPES))
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quantize",
        default=None,
        help="llama-quantize type (default: q4_0 for bench, none for tiny)",
    )
    args = parser.parse_args(argv)
    wanted = args.quantize or ("q4_0" if args.kind == "bench" else "none")
    started = time.monotonic()
    path = examplemodel.make(args.kind, args.out, args.seed, None if wanted == "none" else wanted)
    shape = examplemodel.SHAPES[args.kind]
    dtype = "f16" if wanted == "none" else wanted
    print(
        f"{path}: {shape.parameter_count / 1e6:.1f} M parameters, {dtype}, "
        f"{path.stat().st_size / 1e6:.1f} MB in {time.monotonic() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
