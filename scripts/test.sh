#!/usr/bin/env bash
# The test command: set the machine up, lint, type-check, run every test (the end-to-end
# ones against real podman, images, llama.cpp and loopback servers included), then run the
# benchmark harness once in --quick mode so it never rots.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check vkrama tests examples benchmarks
.venv/bin/ruff format --check vkrama tests examples benchmarks
.venv/bin/mypy
# The rocm image compiled with ROCm 7 takes longer to build on CI's 2 cores than CI has to
# spare (docs/images.md, "The ROCm 7 image"): its tests run on request, never counted as
# passed here.
if [ "${VKRAMA_TEST_ROCM7:-0}" != 1 ]; then
  set -- -m "not rocm7" "$@"
fi
.venv/bin/pytest "$@"
if [ -f benchmarks/__main__.py ]; then
  .venv/bin/python -m benchmarks --quick
fi
