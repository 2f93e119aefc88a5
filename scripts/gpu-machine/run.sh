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
# Issue 17 (Vulkan against CUDA on the H100), two calls of under 10 minutes each:
#   run.sh issue17a   `vkrama devices`/`doctor`; the 7B Q4_0 model; vulkaninfo --summary with
#                     the vulkan/nvidia cell's dry-run passthrough; `vkrama bench` cuda +
#                     vulkan/nvidia, pp512/tg128, fa 0,1; raw `podman run` of the dry-run
#                     command for one cuda and one vulkan cell (vkrama ÷ raw)
#   run.sh issue17b   the Llama-3.1-8B-shaped Q4_K_M; `vkrama bench` at depths 0,4096,16384,
#                     fa 1; `serve --backend best -d` + a chat; `serve --backend vulkan
#                     --vk-driver nvidia -d` + a chat
#   run.sh issue26    (issue 26) the 8B Q4_K_M; `vkrama tune` cuda and vulkan/nvidia for pp2048
#                     and tg128 within 4 minutes; `bench --tuned`
#   run.sh issue26b   the same tuning over 5 minutes, bench --tuned, then serve best, cuda and
#                     vulkan/nvidia in turn (warmed before ready) with their first two chats
#   run.sh issue28    (issue 28) `serve --backend best` (the tuned winner) + its first two
#                     chats; `bench --serve` closed loop at 1/8/32 clients; a Poisson rate
#                     sweep under ttft_p90=500ms,itl_p90=50ms
# Each exports every stored run to $OUT/results.{json,md} and their files as issue17.tar.gz.
# Every step runs under its own `timeout` (SIGINT first: vkrama then removes its container
# and keeps the finished cells), cut to what is left of a 540 s budget per call, so one
# stuck step cannot eat the call and the exports at the end always run.
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
# The vkrama that travelled with this call comes first, then the carried wheel install.sh put
# in /opt/vkrama-site (and its dependencies): a call made after a landing runs the new code.
export PYTHONPATH=$PWD:/opt/vkrama-site${PYTHONPATH:+:$PYTHONPATH}
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
sys.path.insert(0, "examples")  # examplemodel.py: the fixture beside make_model.py
import examplemodel

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
    chat "$PORT" "$OUT/chat.json"
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

# -- issue 17 ---------------------------------------------------------------------------------
MODEL7=$STATE/models/llama-2-7b-shape-q4_0.gguf
MODEL8=$STATE/models/llama-3.1-8b-shape-q4_k_m.gguf
I17DIR=$STATE/issue17            # the detailed files; $OUT gets one tar of them (8 files back)
I17="python3 scripts/gpu-machine/issue17.py"
VK_NV=(--backend cuda,vulkan --vk-driver nvidia)
CALL_BUDGET=540                  # s for the bounded steps of one call: 10 min less the rest
CALL_START=$SECONDS
bounded() {  # SECONDS COMMAND...: the step's own limit, cut to what the call has left;
             # Ctrl-C semantics first (vkrama removes its container), KILL 15 s later
    local limit=$1; shift
    local left=$((CALL_BUDGET - (SECONDS - CALL_START)))
    ((left < limit)) && limit=$left
    if ((limit < 10)); then echo "!!! skipped, the call's time is spent: $*"; return 125; fi
    timeout -s INT -k 15 "$limit" "$@"
    local rc=$?
    [ $rc = 124 ] && echo "!!! timed out after $limit s: $*"
    return $rc
}

issue17a() {
    mkdir -p "$I17DIR"
    step "vkrama devices"
    vkrama devices
    vkrama devices --json > "$I17DIR/devices.json"
    vkrama doctor
    cp /etc/cdi/nvidia.yaml "$I17DIR/cdi-nvidia.yaml"
    step "model 7B"
    [ -s "$MODEL7" ] || bounded 120 $I17 model 7b "$MODEL7"
    step "vkrama --dry-run bench (the commands the raw runs below reuse)"
    vkrama --dry-run bench "$MODEL7" "${VK_NV[@]}" --fa 1 --json > "$I17DIR/dry-run-7b.json"
    vkrama --dry-run bench "$MODEL7" "${VK_NV[@]}" --fa 0,1
    step "vulkaninfo --summary with the vulkan/nvidia cell's passthrough"
    mapfile -t info < <($I17 argv "$I17DIR/dry-run-7b.json" vulkan/nvidia vulkaninfo --summary)
    echo "+ ${info[*]}"
    bounded 40 "${info[@]}" > "$I17DIR/vulkaninfo.txt" 2>&1
    echo "exit status: $?"
    cat "$I17DIR/vulkaninfo.txt"
    # vulkaninfo of Debian sid (1.4.x) segfaulted with driver 580 on 2026-11-25, in the
    # container AND on the host, after the loader had created the H100's device: its stdout
    # is lost in the buffer. Under a pty it is line-buffered; the loader's own log names the
    # device and driver; ggml's device list is what vkrama relies on. Same passthrough each.
    step "the same passthrough: vulkaninfo under a pty, the loader's log, llama-bench --list-devices"
    mapfile -t pty < <($I17 argv "$I17DIR/dry-run-7b.json" vulkan/nvidia script -qec "vulkaninfo --summary" /dev/null)
    bounded 40 "${pty[@]}" > "$I17DIR/vulkaninfo-pty.txt" 2>&1; echo "exit status: $?"
    tail -30 "$I17DIR/vulkaninfo-pty.txt"
    mapfile -t dbg < <($I17 argv "$I17DIR/dry-run-7b.json" vulkan/nvidia env VK_LOADER_DEBUG=driver vulkaninfo --summary)
    bounded 40 "${dbg[@]}" > "$I17DIR/vulkaninfo-loader.txt" 2>&1; echo "exit status: $?"
    grep -E "Using|Original order|\[0\]" "$I17DIR/vulkaninfo-loader.txt" | head -6
    mapfile -t list < <($I17 argv "$I17DIR/dry-run-7b.json" vulkan/nvidia llama-bench --list-devices)
    bounded 40 "${list[@]}" 2>&1 | tee "$I17DIR/list-devices.txt" | tail -4
    step "the same vulkaninfo on the host, outside any container"
    rm -rf /tmp/vi && mkdir -p /tmp/vi
    podman run --rm --user 0 -v /tmp/vi:/out localhost/vkrama/vulkan:latest sh -c \
        'cd /usr/lib/x86_64-linux-gnu && cp -L /usr/bin/vulkaninfo libvulkan.so.1 libX11.so.6 libxcb.so.1 libwayland-client.so.0 libXau.so.6 libXdmcp.so.6 libffi.so.8 libbsd.so.0 libmd.so.0 /out/'
    (cd /tmp/vi && LD_LIBRARY_PATH=/tmp/vi:/usr/local/nvidia/lib64 \
        VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json \
        timeout 40 script -qec "./vulkaninfo --summary" /dev/null) > "$I17DIR/vulkaninfo-host.txt" 2>&1
    echo "exit status: $?"; tail -30 "$I17DIR/vulkaninfo-host.txt"
    step "vkrama bench 7B: pp512/tg128, fa 0,1, cuda and vulkan/nvidia"
    bounded 280 vkrama bench "$MODEL7" "${VK_NV[@]}" --fa 0,1 --timeout 200 --json \
        > "$I17DIR/bench-7b.json"
    echo "exit status: $?"
    vkrama results show latest
    step "raw podman run of the dry-run commands (fa on): vkrama ÷ raw"
    bounded 60 $I17 raw "$I17DIR/dry-run-7b.json" cuda "$I17DIR/raw-cuda.json"
    bounded 60 $I17 raw "$I17DIR/dry-run-7b.json" vulkan/nvidia "$I17DIR/raw-vulkan.json"
    $I17 ratio "$I17DIR/bench-7b.json" "$I17DIR/raw-cuda.json" "$I17DIR/raw-vulkan.json" \
        | tee "$I17DIR/fidelity.txt"
    export_runs
}

chat() {  # PORT FILE: one chat completion, its answer saved in FILE
    python3 - "$1" "$2" <<'EOF'
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
}

serve_and_chat() {  # NAME SERVE-ARGS...: serve the 7B detached, one chat, logs, stop
    local name=$1; shift
    local started=$SECONDS
    if bounded 60 vkrama serve "$MODEL7" "$@" -d --port "$PORT" --name "vkrama-i17-$name"; then
        echo "ready after $((SECONDS - started)) s"
        chat "$PORT" "$I17DIR/chat-$name.json"  # its own 120 s limit
    fi
    vkrama logs "vkrama-i17-$name" > "$STATE/logs/serve-$name.log" 2>&1
    grep -E "ggml_vulkan|CUDA|offload" "$STATE/logs/serve-$name.log" | head -6
    vkrama stop "vkrama-i17-$name"
}

issue17b() {
    mkdir -p "$I17DIR"
    step "model 8B"
    [ -s "$MODEL8" ] || bounded 200 $I17 model 8b "$MODEL8"
    vkrama inspect "$MODEL8"
    step "vkrama bench 8B: pp512/tg128 at depths 0,4096,16384, fa 1"
    bounded 260 vkrama bench "$MODEL8" "${VK_NV[@]}" --fa 1 --depth 0,4096,16384 \
        --timeout 180 --json > "$I17DIR/bench-8b.json"
    echo "exit status: $?"
    vkrama results show latest
    step "vkrama serve 7B --backend best -d (ranks the 7B run at depth 0) + a chat"
    serve_and_chat best --backend best
    step "vkrama serve 7B --backend vulkan --vk-driver nvidia -d + a chat"
    serve_and_chat vulkan --backend vulkan --vk-driver nvidia
    export_runs
}

# -- issues 26 and 28: each stack at its best, and serving under real traffic -----------------
I26DIR=$STATE/issue17            # same folder: export_runs tars it as issue17.tar.gz
SERVE_8B=(--prompt-tokens 512 --gen-tokens 128)

issue26() {  # tune cuda and vulkan/nvidia on the 8B Q4_K_M, then bench both at their tunings
    mkdir -p "$I26DIR"
    step "vkrama devices"
    vkrama devices
    step "model 8B"
    [ -s "$MODEL8" ] || bounded 200 $I17 model 8b "$MODEL8"
    step "vkrama --dry-run tune 8B"
    vkrama --dry-run tune "$MODEL8" "${VK_NV[@]}" --for both
    step "vkrama tune 8B --for both (pp2048 and tg128), 4 minutes over both stacks"
    bounded 300 vkrama tune "$MODEL8" "${VK_NV[@]}" --for both --budget 4m --timeout 120
    echo "exit status: $?"
    vkrama tune --show "$MODEL8"
    vkrama tune --show "$MODEL8" --json > "$I26DIR/tune-8b.json"
    step "vkrama bench 8B --tuned: pp2048 and tg128, each stack at its own flags"
    bounded 150 vkrama bench "$MODEL8" "${VK_NV[@]}" --tuned -p 2048 -n 128 -r 3 \
        --timeout 120 --json > "$I26DIR/bench-8b-tuned.json"
    echo "exit status: $?"
    vkrama results show latest
    export_runs
}

issue26b() {  # again, after the cold-start pricing fix: 5 minutes, then serve each stack warm
    mkdir -p "$I26DIR"
    [ -s "$MODEL8" ] || bounded 200 $I17 model 8b "$MODEL8"
    step "vkrama tune 8B --for both (pp2048 and tg128), 5 minutes over both stacks"
    bounded 330 vkrama tune "$MODEL8" "${VK_NV[@]}" --for both --budget 5m --timeout 120
    echo "exit status: $?"
    vkrama tune --show "$MODEL8"
    vkrama tune --show "$MODEL8" --json > "$I26DIR/tune-8b-b.json"
    step "vkrama bench 8B --tuned: pp2048 and tg128, each stack at its own flags"
    bounded 90 vkrama bench "$MODEL8" "${VK_NV[@]}" --tuned -p 2048 -n 128 -r 3 \
        --timeout 80 --json > "$I26DIR/bench-8b-tuned-b.json"
    echo "exit status: $?"
    vkrama results show latest
    for stack in best cuda vulkan; do
        step "vkrama serve 8B --backend $stack -d (warmed before ready) + its first two chats"
        local args=(--backend "$stack") started=$SECONDS
        [ "$stack" = vulkan ] && args+=(--vk-driver nvidia)
        if bounded 90 vkrama serve "$MODEL8" "${args[@]}" -d --port "$PORT" --name "vkrama-i26-$stack"; then
            echo "ready after $((SECONDS - started)) s"
            first_chats "$stack-b"
        fi
        vkrama logs "vkrama-i26-$stack" > "$STATE/logs/serve-$stack.log" 2>&1
        vkrama stop "vkrama-i26-$stack"
    done
    export_runs
}

first_chats() {  # NAME: two chats right after ready, the first one's cost is what warm-up buys
    chat "$PORT" "$I26DIR/chat-$1-first.json"
    chat "$PORT" "$I26DIR/chat-$1-second.json"
}

issue28() {  # serve the tuned winner; closed-loop 1/8/32 clients; a rate sweep under an SLO
    mkdir -p "$I26DIR"
    [ -s "$MODEL8" ] || bounded 200 $I17 model 8b "$MODEL8"
    step "vkrama serve 8B --backend best -d (the tuned winner's flags) + two chats"
    local started=$SECONDS
    if bounded 90 vkrama serve "$MODEL8" --backend best -d --port "$PORT" --name vkrama-i28-best; then
        echo "ready after $((SECONDS - started)) s"
        first_chats best
    fi
    vkrama logs vkrama-i28-best > "$STATE/logs/serve-best.log" 2>&1
    vkrama stop vkrama-i28-best
    step "vkrama bench 8B --serve: closed loop, 1, 8 and 32 clients"
    bounded 200 vkrama bench "$MODEL8" "${VK_NV[@]}" --serve --concurrency 1,8,32 \
        "${SERVE_8B[@]}" --requests 32 --json > "$I26DIR/serve-8b-closed.json"
    echo "exit status: $?"
    vkrama results show latest
    step "vkrama bench 8B --serve: Poisson arrivals, rate sweep under ttft_p90=500ms,itl_p90=50ms"
    bounded 260 vkrama bench "$MODEL8" "${VK_NV[@]}" --serve --request-rate 2,8 --sweep \
        --slo ttft_p90=500ms,itl_p90=50ms --parallel 32 --duration 8 "${SERVE_8B[@]}" \
        --json > "$I26DIR/serve-8b-sweep.json"
    echo "exit status: $?"
    vkrama results show latest
    export_runs
}

export_runs() {  # every stored run as json + md, and the issue-17 files as one tar, to $OUT
    step "results"
    vkrama results list
    runs=$(vkrama results list --json | python3 -c 'import json,sys; print(*sorted(r["id"] for r in json.load(sys.stdin)))')
    [ -n "$runs" ] || return 0
    vkrama results export --format json $runs > "$OUT/results.json"
    vkrama results export --format md $runs > "$OUT/results.md"
    cat "$OUT/results.md"
    [ -d "$I17DIR" ] && tar -czf "$OUT/issue17.tar.gz" -C "$STATE" issue17
}

stages=("${@:-all}")
[ "${stages[*]}" = all ] && stages=(diag model serve bench)
for stage in "${stages[@]}"; do
    case $stage in
        diag|model|serve|bench|issue17a|issue17b|issue26|issue26b|issue28) ;;
        *) echo "usage: run.sh diag|model|serve|bench|issue17a|issue17b|issue26|issue26b|issue28|all ..." >&2; exit 2 ;;
    esac
done
for stage in "${stages[@]}"; do "$stage"; done 2>&1 | tee -a "$OUT/run.log"
cp -r "$VKRAMA_HOME"/*.log /var/tmp/vkrama-*/service.log /tmp/vkrama-0/service.log "$STATE/logs/" 2>/dev/null
podman info > "$STATE/logs/podman-info.txt" 2>&1
logs_tar
