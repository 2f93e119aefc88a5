#!/usr/bin/env bash
# Runs ON the GPU machine (16 idle cores, unlike the shared 2-core box): the pull comparisons
# against curl and peers, the same harness as here (`python -m benchmarks --only pull
# pull_capped`), with vkrama from the carried wheel. The harness wants a podman socket (install.sh base)
# and curl (the peer; the machine's own). Results go to $OUT as gpu-machine-pull.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/gpu-machine/install.sh base >/dev/null
command -v curl >/dev/null || { echo "pull.sh: no curl on this machine: the peer is missing"; exit 1; }
curl --version | head -1
nproc; uptime
export PYTHONPATH=/opt/vkrama-site
python3 -m benchmarks --only pull pull_capped
for f in benchmarks/results/*-pull-pull_capped.json benchmarks/results/*-pull-pull_capped.md; do
    cp "$f" "${OUT:-/tmp}/gpu-machine-pull.${f##*.}"
done
