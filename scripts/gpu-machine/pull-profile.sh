#!/usr/bin/env bash
# Runs ON the GPU machine: where one stream's time goes (sha256 rate of this CPU, curl and
# vkrama wall times, vkrama start-up, a cProfile of one pull, import times).
set -uo pipefail
cd "$(dirname "$0")/../.."
bash scripts/gpu-machine/install.sh base >/dev/null 2>&1 || echo "install failed"
export PYTHONPATH=/opt/vkrama-site
command -v perf strace ltrace || true
lscpu | grep -E "Model name|Flags" | cut -c1-200; grep -o -w "sha_ni" /proc/cpuinfo | head -1
python3 - <<'PY'
import hashlib,time
b=bytes(1<<30)
for _ in range(2):
    t=time.perf_counter(); hashlib.sha256(b).hexdigest(); print("sha256 GB/s %.2f" % ((1<<30)/(time.perf_counter()-t)/1e9))
PY
M=$(python3 -c "from benchmarks.inputs import Session; from benchmarks.pull import big_model; print(big_model(Session(quick=True,pairs=1,warmup=0)))")
echo model $M; ls -la $M
rm -f /tmp/port; python3 -m benchmarks.loopback $(dirname $M) /tmp/port & SRV=$!
while [ ! -s /tmp/port ]; do sleep 0.1; done
URL=http://127.0.0.1:$(cat /tmp/port)/$(basename $M)
python3 -m compileall -q /opt/vkrama-site/vkrama
for i in 1 2 3; do rm -f /tmp/c.gguf; /usr/bin/env time -f "curl real %e user %U sys %S" curl -sS -o /tmp/c.gguf $URL 2>&1 || { s=$(date +%s.%N); curl -sS -o /tmp/c.gguf $URL; echo curl $(echo "$(date +%s.%N) - $s" | bc); }; done
for i in 1 2 3; do s=$(date +%s%N); vkrama --version >/dev/null; echo "vkrama --version $(( ($(date +%s%N)-s)/1000000 )) ms"; done
for i in 1 2 3; do rm -rf /tmp/h; s=$(date +%s%N); VKRAMA_HOME=/tmp/h vkrama pull --streams 1 $URL >/dev/null 2>&1; echo "vkrama pull --streams 1: $(( ($(date +%s%N)-s)/1000000 )) ms rc=$?"; done
for i in 1 2 3; do rm -rf /tmp/h; s=$(date +%s%N); VKRAMA_HOME=/tmp/h vkrama pull $URL >/dev/null 2>&1; echo "vkrama pull (8 streams): $(( ($(date +%s%N)-s)/1000000 )) ms"; done
rm -rf /tmp/h; VKRAMA_HOME=/tmp/h python3 -m cProfile -s tottime -m vkrama pull --streams 1 $URL 2>/dev/null | head -45
python3 -X importtime -m vkrama pull --help 2>&1 >/dev/null | sort -t'|' -k2 -n | tail -12
kill $SRV
