#!/usr/bin/env bash
# Runs ON the GPU machine after install.sh: vkrama's ordinary commands against the real GPU,
# CUDA against Vulkan on NVIDIA's own driver, everything written under $OUT (the device tool
# brings back at most 8 files). Usage: run.sh STAGE[:ARG]... (in order, one call or several).
#
# What the machine is, and whether vkrama sees it:
#   diag              GPU, driver, device nodes, PCI functions, the CDI spec; `vkrama devices`
#                     (+ --json) and `vkrama doctor`
#   vulkaninfo        `vulkaninfo --summary` with exactly the vulkan/nvidia bench cell's
#                     passthrough (and under a pty, with the loader's log, `llama-bench
#                     --list-devices`), then the same vulkaninfo on the host outside any container
# The models (random weights at real shapes; made once, kept while the machine stays warm):
#   model:7b|8b       llama-2-7B-shaped Q4_0 | Llama-3.1-8B-shaped Q4_K_M (shapes.py)
# llama-bench (each stage makes the model it needs first):
#   bench:7b|8b       cuda and vulkan/nvidia, pp512 and tg128, flash attention off and on
#   fidelity:7b|8b    vkrama's t/s against the raw `podman run` of its own dry-run command, per
#                     stack (after bench: on the same model; goal >= 0.99)
#   depths:7b|8b      pp512/tg128 with fa on at depths 0, 4096 and 16384
#   energy[:7b|8b]    W and J/token per test (NVML), both stacks, pp4096/tg256 x 10 (the 8B)
#   check[:7b|8b]     `vkrama check`: each stack's next-token distributions against the CPU
#                     reference's (KL, top-1), with fa on, fa off, and fa on + a q8_0 KV cache
#   tune:BUDGET       `vkrama tune` the 8B on both stacks for pp2048 and tg128 within BUDGET
#                     (default 5m), `tune --show`, then `bench --tuned` pp2048/tg128
#   joules            W and J/token, pp2048/tg128 x 15, at defaults and at the stored tunings
# Serving (the 8B unless a model is named):
#   chats[:7b|8b]     `serve --backend best`, then cuda, then vulkan/nvidia, each detached and
#                     warmed before ready; the first two chats of each (what warm-up buys)
#   closed-loop[:M]   `bench --serve` at 1, 8 and 32 clients, 32 requests a level
#   sweep[:M]         `bench --serve --sweep`: Poisson arrivals from 2/s, raised until the SLO
#                     ($SLO, default ttft_p90=500ms,itl_p90=50ms) breaks
# Past one machine (needs the cpu image: it leads the split):
#   rpc[:M]           a cuda and a vulkan/nvidia `rpc-worker` on GPU 0, `serve --rpc` over both
#                     and `bench --serve --url` at 1 and 8 clients, against each stack alone
#                     (RPC_SERVE=0: only `bench --rpc`, the split against both local stacks)
#
# After the stages: every stored run to $OUT/results.{json,md}, the stages' own files as
# $OUT/files.tar.gz, the logs as $OUT/logs.tar.gz, and everything printed in $OUT/run.log.
# Every step runs under its own `timeout` (SIGINT first: vkrama then removes its container
# and keeps the finished cells), cut to what is left of a 540 s budget per call, so one
# stuck step cannot eat the call and the exports at the end always run.
# A failing step is logged and the next one still runs: every outcome is a result here.
set -uo pipefail
cd "$(dirname "$0")/../.."
STATE=/var/tmp/vkrama-gpu
OUT=${OUT:-$STATE/out}
FILES=$STATE/files               # the stages' JSON and text; $OUT gets one tar of them
export VKRAMA_HOME=$STATE/home
export VKRAMA_IMAGES_PULL=never   # the images were carried in; nothing can be built here
export PYTHONUNBUFFERED=1
# The vkrama that travelled with this call comes first, then the carried wheel install.sh put
# in /opt/vkrama-site (and its dependencies): a call made after a landing runs the new code.
export PYTHONPATH=$PWD:/opt/vkrama-site${PYTHONPATH:+:$PYTHONPATH}
PORT=8080                         # llama-server's container port: right in host-network mode too
SLO=${SLO:-ttft_p90=500ms,itl_p90=50ms}
RAW="python3 scripts/gpu-machine/raw.py"
STACKS=(--backend cuda,vulkan --vk-driver nvidia)
SERVED=(--prompt-tokens 512 --gen-tokens 128)
CALL_BUDGET=540                  # s for the bounded steps of one call: 10 min less the rest
CALL_START=$SECONDS
step() { echo; echo "=== $* ($(date +%T))"; }

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

model_path() {  # 7b|8b: where that model lives
    case $1 in
        7b) echo "$STATE/models/llama-2-7b-shape-q4_0.gguf" ;;
        8b) echo "$STATE/models/llama-3.1-8b-shape-q4_k_m.gguf" ;;
        *) echo "no model '$1' (7b or 8b)" >&2; return 2 ;;
    esac
}

seconds() {  # 90s | 5m | 90: a duration in seconds
    case $1 in
        *m) echo $((${1%m} * 60)) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}

diag() {
    step "machine"
    nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id,uuid --format=csv
    ls -l /dev/nvidia* 2>&1
    for dev in /sys/bus/pci/devices/*; do
        [ "$(cat "$dev/vendor")" = 0x10de ] || continue
        echo "$dev class=$(cat "$dev/class") device=$(cat "$dev/device")" \
            "driver=$(basename "$(readlink "$dev/driver" 2>/dev/null)" 2>/dev/null)"
    done
    cp /etc/cdi/nvidia.yaml "$FILES/cdi-nvidia.yaml"
    step "vkrama devices"
    vkrama devices
    vkrama devices --json > "$FILES/devices.json"
    step "vkrama doctor"
    vkrama doctor
}

model() {  # 7b|8b
    local path; path=$(model_path "${1:-8b}") || return 2
    [ -s "$path" ] && return 0
    step "model ${1:-8b}"
    bounded 200 python3 scripts/gpu-machine/shapes.py "${1:-8b}" "$path"
    vkrama inspect "$path"
}

dry_run() {  # MODEL: the bench cells' commands, which vulkaninfo and the raw runs reuse
    local path; path=$(model_path "$1") || return 2
    vkrama --dry-run bench "$path" "${STACKS[@]}" --fa 1 --json > "$FILES/dry-run-$1.json"
}

vulkaninfo() {
    model 7b
    dry_run 7b
    local dry=$FILES/dry-run-7b.json
    step "vulkaninfo --summary with the vulkan/nvidia cell's passthrough"
    mapfile -t info < <($RAW argv "$dry" vulkan/nvidia vulkaninfo --summary)
    echo "+ ${info[*]}"
    bounded 40 "${info[@]}" > "$FILES/vulkaninfo.txt" 2>&1
    echo "exit status: $?"
    cat "$FILES/vulkaninfo.txt"
    # Debian sid's vulkaninfo (1.4.x) segfaulted with driver 580 on 2026-11-25, in the
    # container AND on the host, after the loader had created the H100's device: its stdout
    # is lost in the buffer. Under a pty it is line-buffered; the loader's own log names the
    # device and driver; ggml's device list is what vkrama relies on. Same passthrough each.
    step "the same passthrough: vulkaninfo under a pty, the loader's log, llama-bench --list-devices"
    mapfile -t pty < <($RAW argv "$dry" vulkan/nvidia script -qec "vulkaninfo --summary" /dev/null)
    bounded 40 "${pty[@]}" > "$FILES/vulkaninfo-pty.txt" 2>&1; echo "exit status: $?"
    tail -30 "$FILES/vulkaninfo-pty.txt"
    mapfile -t dbg < <($RAW argv "$dry" vulkan/nvidia env VK_LOADER_DEBUG=driver vulkaninfo --summary)
    bounded 40 "${dbg[@]}" > "$FILES/vulkaninfo-loader.txt" 2>&1; echo "exit status: $?"
    grep -E "Using|Original order|\[0\]" "$FILES/vulkaninfo-loader.txt" | head -6
    mapfile -t list < <($RAW argv "$dry" vulkan/nvidia llama-bench --list-devices)
    bounded 40 "${list[@]}" 2>&1 | tee "$FILES/list-devices.txt" | tail -4
    step "the same vulkaninfo on the host, outside any container"
    rm -rf /tmp/vi && mkdir -p /tmp/vi
    podman run --rm --user 0 -v /tmp/vi:/out localhost/vkrama/vulkan:latest sh -c \
        'cd /usr/lib/x86_64-linux-gnu && cp -L /usr/bin/vulkaninfo libvulkan.so.1 libX11.so.6 libxcb.so.1 libwayland-client.so.0 libXau.so.6 libXdmcp.so.6 libffi.so.8 libbsd.so.0 libmd.so.0 /out/'
    (cd /tmp/vi && LD_LIBRARY_PATH=/tmp/vi:/usr/local/nvidia/lib64 \
        VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json \
        timeout 40 script -qec "./vulkaninfo --summary" /dev/null) > "$FILES/vulkaninfo-host.txt" 2>&1
    echo "exit status: $?"; tail -30 "$FILES/vulkaninfo-host.txt"
}

bench() {  # 7b|8b: pp512/tg128, fa off and on, both stacks
    local kind=${1:-7b} path; path=$(model_path "$kind") || return 2
    model "$kind"
    step "vkrama bench $kind: pp512/tg128, fa 0,1, cuda and vulkan/nvidia"
    vkrama --dry-run bench "$path" "${STACKS[@]}" --fa 0,1
    bounded 280 vkrama bench "$path" "${STACKS[@]}" --fa 0,1 --timeout 200 --json \
        > "$FILES/bench-$kind.json"
    echo "exit status: $?"
    vkrama results show latest
}

fidelity() {  # 7b|8b: vkrama ÷ the raw run of its dry-run command (fa on), per stack
    local kind=${1:-7b}
    [ -s "$FILES/bench-$kind.json" ] || bench "$kind"
    dry_run "$kind"
    step "raw podman run of the dry-run commands (fa on): vkrama ÷ raw"
    bounded 60 $RAW run "$FILES/dry-run-$kind.json" cuda "$FILES/raw-$kind-cuda.json"
    bounded 60 $RAW run "$FILES/dry-run-$kind.json" vulkan/nvidia "$FILES/raw-$kind-vulkan.json"
    $RAW ratio "$FILES/bench-$kind.json" "$FILES/raw-$kind-cuda.json" \
        "$FILES/raw-$kind-vulkan.json" | tee "$FILES/fidelity-$kind.txt"
}

depths() {  # 7b|8b: fa on at depths 0, 4096, 16384
    local kind=${1:-8b} path; path=$(model_path "$kind") || return 2
    model "$kind"
    step "vkrama bench $kind: pp512/tg128 at depths 0,4096,16384, fa 1"
    bounded 260 vkrama bench "$path" "${STACKS[@]}" --fa 1 --depth 0,4096,16384 \
        --timeout 180 --json > "$FILES/depths-$kind.json"
    echo "exit status: $?"
    vkrama results show latest
}

tune() {  # BUDGET: tune the 8B on both stacks for pp2048 and tg128, then bench at the tunings
    local budget=${1:-5m} path; path=$(model_path 8b)
    model 8b
    step "vkrama tune 8B --for both (pp2048 and tg128) within $budget over both stacks"
    vkrama --dry-run tune "$path" "${STACKS[@]}" --for both
    # tune keeps to its budget but for one warm start per stack: a minute over it
    bounded $(($(seconds "$budget") + 60)) vkrama tune "$path" "${STACKS[@]}" --for both \
        --budget "$budget" --timeout 120
    echo "exit status: $?"
    vkrama tune --show "$path"
    vkrama tune --show "$path" --json > "$FILES/tune-8b-$budget.json"
    step "vkrama bench 8B --tuned: pp2048 and tg128, each stack at its own flags"
    bounded 150 vkrama bench "$path" "${STACKS[@]}" --tuned -p 2048 -n 128 -r 3 \
        --timeout 120 --json > "$FILES/bench-8b-tuned-$budget.json"
    echo "exit status: $?"
    vkrama results show latest
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

chats() {  # 7b|8b: serve best, cuda, vulkan/nvidia in turn; the first two chats of each
    local kind=${1:-8b} path; path=$(model_path "$kind") || return 2
    model "$kind"
    for stack in best cuda vulkan; do
        step "vkrama serve $kind --backend $stack -d (warmed before ready) + its first two chats"
        local args=(--backend "$stack") started=$SECONDS name=vkrama-gpu-$stack
        [ "$stack" = vulkan ] && args+=(--vk-driver nvidia)
        if bounded 90 vkrama serve "$path" "${args[@]}" -d --port "$PORT" --name "$name"; then
            echo "ready after $((SECONDS - started)) s"
            chat "$PORT" "$FILES/chat-$kind-$stack-first.json"  # its own 120 s limit
            chat "$PORT" "$FILES/chat-$kind-$stack-second.json"
        fi
        vkrama logs "$name" > "$STATE/logs/serve-$kind-$stack.log" 2>&1
        grep -E "ggml_vulkan|CUDA|offload" "$STATE/logs/serve-$kind-$stack.log" | head -6
        vkrama stop "$name"
    done
}

closed-loop() {  # 7b|8b: 1, 8 and 32 clients at once
    local kind=${1:-8b} path; path=$(model_path "$kind") || return 2
    model "$kind"
    step "vkrama bench $kind --serve: closed loop, 1, 8 and 32 clients"
    bounded 200 vkrama bench "$path" "${STACKS[@]}" --serve --concurrency 1,8,32 \
        "${SERVED[@]}" --requests 32 --json > "$FILES/serve-$kind-closed.json"
    echo "exit status: $?"
    vkrama results show latest
}

sweep() {  # 7b|8b: Poisson arrivals, the rate raised until the SLO breaks
    local kind=${1:-8b} path; path=$(model_path "$kind") || return 2
    model "$kind"
    step "vkrama bench $kind --serve: Poisson arrivals, rate sweep under $SLO"
    bounded 260 vkrama bench "$path" "${STACKS[@]}" --serve --request-rate 2,8 --sweep \
        --slo "$SLO" --parallel 32 --duration 8 "${SERVED[@]}" \
        --json > "$FILES/serve-$kind-sweep.json"
    echo "exit status: $?"
    vkrama results show latest
}

nvml_path() {  # NVML loadable by vkrama: nvidia-smi finds the driver's libraries where ld.so may not
    python3 -c 'import pynvml; pynvml.nvmlInit()' 2>/dev/null && return 0
    echo "NVML did not load from the default library path: adding /usr/local/nvidia/lib64"
    export LD_LIBRARY_PATH=/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
}

energy() {  # 7b|8b: W and J/token per test from NVML, both stacks, tests long enough to count
    local kind=${1:-8b} path; path=$(model_path "$kind") || return 2
    model "$kind"
    step "NVML as vkrama reads it (nvidia-ml-py, the driver's libnvidia-ml)"
    nvml_path
    python3 -c 'import pynvml as n; n.nvmlInit(); h = n.nvmlDeviceGetHandleByIndex(0);
print(n.nvmlDeviceGetName(h), n.nvmlDeviceGetTotalEnergyConsumption(h), "mJ so far,",
      n.nvmlDeviceGetPowerUsage(h) / 1000, "W now")'
    vkrama doctor 2>&1 | grep -i -E "power|energy|nvml|counter"
    # A test's counted repetitions must run 2.5 s or more to get a figure (podman's log
    # polling): pp4096 x 10 is ~4.5 s and tg256 x 10 ~12 s on an H100, pp512/tg128 are not.
    step "vkrama bench $kind: pp4096/tg256 x 10, fa on, with W and J/token per test"
    bounded 240 vkrama bench "$path" "${STACKS[@]}" --fa 1 -p 4096 -n 256 -r 10 \
        --timeout 200 --json > "$FILES/energy-$kind.json"
    echo "exit status: $?"
    vkrama results show latest
}

check() {  # 7b|8b: each stack's next-token distributions against the CPU reference's
    local kind=${1:-8b} path; path=$(model_path "$kind") || return 2
    model "$kind"
    local name flags
    # fa on and off, then a quantized KV cache: what a tuning may keep must compute the same
    for flags in "-fa on" "-fa off" "-fa on -ctk q8_0 -ctv q8_0"; do
        name=$(echo "$flags" | tr -d ' -')
        step "vkrama check $kind: cuda and vulkan/nvidia against the CPU reference, -- $flags"
        # shellcheck disable=SC2086  # the flags are words
        bounded 240 vkrama check "$path" "${STACKS[@]}" --json -- $flags > "$FILES/check-$kind-$name.json"
        echo "exit status: $?"
        python3 - "$FILES/check-$kind-$name.json" <<'EOF2'
import json, sys
try:
    found = json.load(open(sys.argv[1]))
except ValueError as error:
    sys.exit(f"no JSON: {error}")
print("reference:", found.get("reference"))
for row in found.get("stacks", []):
    print({k: v for k, v in row.items() if k not in ("image_id",)})
EOF2
    done
}

joules() {  # BUDGET: J/token at defaults and at the tunings tune:BUDGET stored (pp2048, tg128)
    local budget=${1:-5m} path; path=$(model_path 8b)
    model 8b
    nvml_path
    # -r 15: pp2048 on an H100 runs ~0.2 s a repetition, and a test needs 2.5 s of counted
    # repetitions for a J/token figure; tg128 (~0.9 s) has room to spare.
    step "vkrama bench 8B: pp2048/tg128 x 15, each stack at llama-bench's defaults, W and J/token"
    bounded 200 vkrama bench "$path" "${STACKS[@]}" -p 2048 -n 128 -r 15 --timeout 150 \
        --json > "$FILES/joules-8b-defaults.json"
    echo "exit status: $?"
    vkrama results show latest
    step "the same at each stack's tuned flags and switches (tune:$budget)"
    bounded 200 vkrama bench "$path" "${STACKS[@]}" --tuned -p 2048 -n 128 -r 15 \
        --timeout 150 --json > "$FILES/joules-8b-tuned.json"
    echo "exit status: $?"
    vkrama results show latest
}

rpc() {  # 7b|8b: a cuda worker and a vulkan/nvidia worker on GPU 0, the model split over both,
         # against each stack serving alone; llama-bench over the split where bench has --rpc
    local kind=${1:-8b} path; path=$(model_path "$kind") || return 2
    model "$kind"
    local workers=127.0.0.1:50052,127.0.0.1:50053 url=http://127.0.0.1:$PORT
    local load=(--concurrency 1,8 "${SERVED[@]}" --requests 16)
    step "rpc-worker cuda :50052 and vulkan/nvidia :50053, both on GPU 0"
    bounded 90 vkrama rpc-worker --backend cuda --gpu 0 --port 50052 --name vkrama-gpu-w-cuda
    bounded 90 vkrama rpc-worker --backend vulkan --vk-driver nvidia --gpu 0 --port 50053 \
        --name vkrama-gpu-w-vulkan
    vkrama ps
    if vkrama bench --help | grep -q -- '--rpc'; then
        step "vkrama bench $kind over the split (pp512/tg128, fa on) against each stack locally"
        bounded 240 vkrama bench "$path" "${STACKS[@]}" --rpc "$workers" --fa 1 --timeout 150 \
            --json > "$FILES/rpc-bench-$kind.json"
        echo "exit status: $?"
        vkrama results show latest
    fi
    if [ "${RPC_SERVE:-1}" = 0 ]; then  # bench only: a short call
        vkrama stop vkrama-gpu-w-cuda vkrama-gpu-w-vulkan
        return 0
    fi
    step "serve $kind --rpc $workers (the cpu image leads; the workers hold every layer)"
    local started=$SECONDS
    if bounded 240 vkrama serve "$path" --rpc "$workers" -d --port "$PORT" --name vkrama-gpu-rpc \
        --timeout 220; then
        echo "ready after $((SECONDS - started)) s"
        vkrama logs vkrama-gpu-rpc 2>&1 | grep -iE "rpc|offload|buffer size" | head -12
        bounded 150 vkrama bench --serve --url "$url" "${load[@]}" \
            --json > "$FILES/rpc-serve-$kind-split.json"
        echo "exit status: $?"
        vkrama results show latest
    fi
    vkrama logs vkrama-gpu-rpc > "$STATE/logs/rpc-leader-$kind.log" 2>&1
    vkrama stop vkrama-gpu-rpc
    for w in cuda vulkan; do vkrama logs "vkrama-gpu-w-$w" > "$STATE/logs/rpc-worker-$w.log" 2>&1; done
    vkrama stop vkrama-gpu-w-cuda vkrama-gpu-w-vulkan
    for stack in cuda vulkan; do
        step "serve $kind --backend $stack alone, the same load"
        local args=(--backend "$stack")
        [ "$stack" = vulkan ] && args+=(--vk-driver nvidia)
        if bounded 90 vkrama serve "$path" "${args[@]}" -d --port "$PORT" --name "vkrama-gpu-$stack"; then
            bounded 120 vkrama bench --serve --url "$url" "${load[@]}" \
                --json > "$FILES/rpc-serve-$kind-$stack.json"
            echo "exit status: $?"
            vkrama results show latest
        fi
        vkrama stop "vkrama-gpu-$stack"
    done
}

export_runs() {  # every stored run as json + md, and the stages' files as one tar, to $OUT
    step "results"
    vkrama results list
    runs=$(vkrama results list --json | python3 -c 'import json,sys; print(*sorted(r["id"] for r in json.load(sys.stdin)))')
    if [ -n "$runs" ]; then
        vkrama results export --format json $runs > "$OUT/results.json"
        vkrama results export --format md $runs > "$OUT/results.md"
        cat "$OUT/results.md"
    fi
    tar -czf "$OUT/files.tar.gz" -C "$STATE" files
}

STAGES="diag vulkaninfo model bench fidelity depths energy check tune joules chats closed-loop sweep rpc"
(($#)) || { echo "usage: run.sh STAGE[:ARG]... (stages: $STAGES)" >&2; exit 2; }
for stage in "$@"; do
    [[ " $STAGES " == *" ${stage%%:*} "* ]] && continue
    echo "run.sh: no stage '${stage%%:*}' (stages: $STAGES)" >&2; exit 2
done
mkdir -p "$OUT" "$STATE/models" "$STATE/logs" "$FILES"
for stage in "$@"; do
    if [[ $stage == *:* ]]; then "${stage%%:*}" "${stage#*:}"; else "$stage"; fi
done 2>&1 | tee -a "$OUT/run.log"
export_runs 2>&1 | tee -a "$OUT/run.log"
cp -r "$VKRAMA_HOME"/*.log /var/tmp/vkrama-*/service.log /tmp/vkrama-0/service.log "$STATE/logs/" 2>/dev/null
podman info > "$STATE/logs/podman-info.txt" 2>&1
tar -czf "$OUT/logs.tar.gz" -C "$STATE" logs 2>/dev/null
