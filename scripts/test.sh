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
.venv/bin/pytest "$@"
if [ -f benchmarks/__main__.py ]; then
  .venv/bin/python -m benchmarks --quick
fi
