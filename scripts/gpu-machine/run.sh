#!/usr/bin/env bash
# Runs ON the GPU machine after install.sh: vkrama's normal commands against the real GPU,
# with everything written under $OUT (the device tool brings back at most 8 files).
#
#   run.sh diag       the machine's GPU, device nodes, PCI functions; `vkrama devices`/`doctor`
#   run.sh model      the llama-2-7B-shaped random Q4_0 model (F16 written here, quantized
#                     with llama-quantize from the cuda image)
#   run.sh serve      `vkrama serve --backend cuda -d` + one chat completion, then stop
#   run.sh bench      `vkrama bench --backend cuda,cpu`, then `--backend vulkan --vk-driver
#                     nvidia` (a failed cell is recorded with its reason), export the runs
#   run.sh STAGE...   several in order; `all` is diag model serve bench
#
# A failing step is logged and the next one still runs: every outcome is a result here.
set -uo pipefail
cd "$(dirname "$0")/../.."
STATE=/var/tmp/vkrama-gpu
OUT=${OUT:-$STATE/out}
MODEL=$STATE/models/llama-2-7b-shape-q4_0.gguf
mkdir -p "$OUT" "$STATE/models" "$STATE/logs"
export VKRAMA_HOME=$STATE/home
export VKRAMA_IMAGES_PULL=never   # the images were carried in; nothing can be built here
export PYTHONUNBUFFERED=1
export PYTHONPATH=/opt/vkrama-site${PYTHONPATH:+:$PYTHONPATH}  # where install.sh put vkrama
PORT=8080                         # llama-server's container port: right in host-network mode too
step() { echo; echo "=== $* ($(date +%T))"; }
logs_tar() { tar -czf "$OUT/logs.tar.gz" -C "$STATE" logs 2>/dev/null; }

diag() {
    step "machine"
    nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id,uuid --format=csv
    ls -l /dev/nvidia* 2>&1
    for dev in /sys/bus/pci/devices/*; do
        [ "$(cat "$dev/vendor")" = 0x10de ] || continue
        echo "$dev class=$(cat "$dev/class") device=$(cat "$dev/device")" \
            "driver=$(basename "$(readlink "$dev/driver" 2>/dev/null)" 2>/dev/null)"
    done
    ls /usr/share/misc/pci.ids /usr/share/hwdata/pci.ids 2>&1
    cp /etc/cdi/nvidia.yaml "$OUT/cdi-nvidia.yaml"
    step "vkrama devices"
    vkrama devices
    vkrama devices --json > "$OUT/devices.json"
    vkrama devices --backend cuda
    step "vkrama doctor"
    vkrama doctor
}

model() {
    step "model"
    if [ ! -s "$MODEL" ]; then
        python3 - "$MODEL" <<'EOF'
import sys, tempfile, time
from pathlib import Path
from examples import examplemodel

out = Path(sys.argv[1])
# llama-2-7B's shape: ~6.7 B parameters, F16 13.5 GB, Q4_0 3.8 GB.
shape = examplemodel.Shape("llama-2-7b-shape", 4096, 32, 32, 32, 11008, 32000, 4096)
started = time.monotonic()
with tempfile.TemporaryDirectory(dir=out.parent, prefix=".f16-") as work:
    f16 = examplemodel.write(Path(work) / "f16.gguf", shape)
    wrote = time.monotonic()
    examplemodel.quantize(f16, out, "q4_0", image="localhost/vkrama/cuda:latest")
print(f"{out}: {shape.parameter_count / 1e9:.2f} B parameters; F16 in {wrote - started:.0f} s,"
      f" Q4_0 {out.stat().st_size / 1e9:.2f} GB in {time.monotonic() - wrote:.0f} s")
EOF
    fi
    vkrama inspect "$MODEL"
}

serve() {
    step "vkrama serve --backend cuda"
    local started=$SECONDS
    vkrama serve "$MODEL" --backend cuda -d --port "$PORT" --name vkrama-gpu-serve
    echo "ready after $((SECONDS - started)) s"
    vkrama ps
    step "chat completion"
    python3 - "$PORT" "$OUT/chat.json" <<'EOF'
import json, sys, time, urllib.request
port, out = sys.argv[1], sys.argv[2]
body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 32}
request = urllib.request.Request(
    f"http://127.0.0.1:{port}/v1/chat/completions",
    data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
started = time.monotonic()
reply = json.load(urllib.request.urlopen(request, timeout=120))
reply["_seconds"] = round(time.monotonic() - started, 3)
json.dump(reply, open(out, "w"), indent=2)
print("HTTP 200 in", reply["_seconds"], "s; usage", reply.get("usage"), "timings", reply.get("timings"))
EOF
    vkrama logs vkrama-gpu-serve > "$STATE/logs/serve.log" 2>&1
    grep -E "CUDA|ggml_cuda|offload|model buffer" "$STATE/logs/serve.log" | head -12
    vkrama stop vkrama-gpu-serve
    vkrama ps
}

bench() {
    step "vkrama bench --backend cuda,cpu"
    vkrama bench "$MODEL" --backend cuda,cpu
    step "vkrama bench --backend vulkan --vk-driver nvidia"
    vkrama devices --backend vulkan --vk-driver nvidia
    vkrama bench "$MODEL" --backend vulkan --vk-driver nvidia
    echo "exit status: $?"
    step "results"
    vkrama results list
    runs=$(vkrama results list --json | python3 -c 'import json,sys; print(*sorted(r["id"] for r in json.load(sys.stdin)))')
    vkrama results export --format json $runs > "$OUT/results.json"
    vkrama results export --format md $runs > "$OUT/results.md"
    cat "$OUT/results.md"
    for run in $runs; do vkrama results show "$run"; done
}

stages=("${@:-all}")
[ "${stages[*]}" = all ] && stages=(diag model serve bench)
for stage in "${stages[@]}"; do
    case $stage in
        diag|model|serve|bench) ;;
        *) echo "usage: run.sh diag|model|serve|bench|all ..." >&2; exit 2 ;;
    esac
done
for stage in "${stages[@]}"; do "$stage"; done 2>&1 | tee -a "$OUT/run.log"
cp -r "$VKRAMA_HOME"/*.log /var/tmp/vkrama-*/service.log /tmp/vkrama-0/service.log "$STATE/logs/" 2>/dev/null
podman info > "$STATE/logs/podman-info.txt" 2>&1
logs_tar
