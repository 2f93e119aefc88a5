#!/usr/bin/env bash
# The demo: from a fresh machine to a served model chosen by measurement.
# No GPU: cpu against Vulkan on Mesa's lavapipe. No model hub: a model vkrama's example
# script generates. With a GPU, `--all` benches every backend this host can use.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
model="${VKRAMA_DEMO_MODEL:-examples/models/tiny.gguf}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "vkrama devices"
vkrama devices
step "vkrama images build cpu vulkan"
vkrama images build cpu vulkan
vkrama images list
if [ ! -f "$model" ]; then
  step "making an example model: $model"
  python examples/make_model.py tiny "$model"
fi
step "vkrama bench $model --all (every backend usable on this host)"
vkrama bench "$model" --all -p 64 -n 16 -r 3
step "vkrama serve $model --backend best -d"
vkrama serve "$model" --backend best -d --name vkrama-demo --port auto
trap 'vkrama stop vkrama-demo >/dev/null 2>&1 || true' EXIT
vkrama ps
step "vkrama run: one question to the served model (random weights answer in gibberish)"
vkrama run "$model" "Say hello in five words." --max-tokens 48
echo
step "vkrama stop vkrama-demo"
vkrama stop vkrama-demo
trap - EXIT
