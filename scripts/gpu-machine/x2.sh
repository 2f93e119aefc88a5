#!/usr/bin/env bash
# On the 2xH100 machine after install.sh: x2.sh a = each GPU alone and the 7B split over both
# (bench --gpu each; serve --gpu all + a chat, cuda and vulkan/nvidia); x2.sh b = the 8B served
# to 1, 8 and 32 clients on GPU 0, cuda against vulkan/nvidia
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
S=/var/tmp/vkrama-gpu; M7=$S/models/llama-2-7b-shape-q4_0.gguf; M8=$S/models/llama-3.1-8b-shape-q4_k_m.gguf
export VKRAMA_HOME=$S/home VKRAMA_IMAGES_PULL=never PYTHONUNBUFFERED=1
# the repo copy this call carried is the freshest vkrama; the wheels give its dependencies
export PYTHONPATH=$PWD:/opt/vkrama-site
printf '#!/bin/sh\nPYTHONPATH=%s:/opt/vkrama-site exec python3 -m vkrama "$@"\n' "$PWD" > /usr/local/bin/vkrama; chmod +x /usr/local/bin/vkrama
SHAPES="python3 scripts/gpu-machine/shapes.py"; D=$S/x2; mkdir -p $D $S/models
step() { echo; echo "=== $* ($(date +%T))"; }
chat() { python3 - "$1" "$D/chat-$2.json" <<'PY'
import json, sys, time, urllib.request
port, out = sys.argv[1], sys.argv[2]
body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 32}
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
t = time.monotonic(); reply = json.load(urllib.request.urlopen(req, timeout=90)); reply["_seconds"] = round(time.monotonic() - t, 3)
json.dump(reply, open(out, "w"), indent=2); print("HTTP 200 in", reply["_seconds"], "s; timings", reply.get("timings"))
PY
}
part_a() {
  step machine; nvidia-smi -L; nvidia-smi topo -m 2>&1 | head -5
  step "vkrama devices"; vkrama devices 2>&1 | tee $D/devices.txt
  step "model 7B"; [ -s $M7 ] || timeout 150 $SHAPES 7b $M7
  step "dry-run --gpu each"; vkrama --dry-run bench $M7 --backend cuda,vulkan --vk-driver nvidia --gpu each -r 3 2>&1 | tee $D/dry-run-each.txt | cut -c1-400
  step "bench --gpu each (cuda, vulkan/nvidia)"
  timeout -s INT -k 15 330 vkrama bench $M7 --backend cuda,vulkan --vk-driver nvidia --gpu each -r 3 --timeout 150 2>&1 | tee $D/bench-each.txt
  step "serve --gpu all (cuda) + chat"
  if timeout -s INT 90 vkrama serve $M7 --backend cuda --gpu all -d --port 8080 --name vk-all-cuda; then chat 8080 all-cuda; fi
  vkrama logs vk-all-cuda 2>&1 | grep -E "CUDA[0-9]|offload|split|buffer size" | head -8; vkrama stop vk-all-cuda
  step "serve --gpu all (vulkan/nvidia) + chat"
  if timeout -s INT 90 vkrama serve $M7 --backend vulkan --vk-driver nvidia --gpu all -d --port 8080 --name vk-all-vk; then chat 8080 all-vk; fi
  vkrama logs vk-all-vk 2>&1 | grep -E "Vulkan[0-9]|ggml_vulkan|offload|buffer size" | head -8; vkrama stop vk-all-vk
  export_all
}
part_b() {
  step "model 8B"; [ -s $M8 ] || timeout 200 $SHAPES 8b $M8
  step "bench --serve 8B cuda vs vulkan/nvidia, concurrency 1,8,32"
  timeout -s INT -k 15 420 vkrama bench $M8 --serve --backend cuda,vulkan --vk-driver nvidia --gpu 0 --concurrency 1,8,32 --timeout 200 2>&1 | tee $D/serve-bench.txt
  export_all
}
export_all() {
  step results; vkrama results list
  runs=$(vkrama results list --json | python3 -c 'import json,sys; print(*sorted(r["id"] for r in json.load(sys.stdin)))')
  [ -n "$runs" ] && vkrama results export --format json $runs > $OUT/results.json && vkrama results export --format md $runs > $OUT/results.md
  tar -czf $OUT/x2.tar.gz -C $S x2
}
"part_$1" 2>&1 | tee -a $OUT/run-$1.log
