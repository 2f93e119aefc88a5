#!/usr/bin/env bash
# bench fidelity on the H100, cuda cell: alternating pairs A (vkrama bench) / B (raw podman run of
# the command vkrama --dry-run printed), after one warm-up of each (the driver's JIT fills its cache).
set -uo pipefail
S=/var/tmp/vkrama-gpu; M7=$S/models/llama-2-7b-shape-q4_0.gguf; D=$S/fid; mkdir -p $D $S/models
export VKRAMA_HOME=$S/home VKRAMA_IMAGES_PULL=never PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/opt/vkrama-site
printf '#!/bin/sh\nPYTHONPATH=%s:/opt/vkrama-site exec python3 -m vkrama "$@"\n' "$PWD" > /usr/local/bin/vkrama; chmod +x /usr/local/bin/vkrama
RAW="python3 scripts/gpu-machine/raw.py"
[ -s $M7 ] || timeout 150 python3 scripts/gpu-machine/shapes.py 7b $M7
vkrama --dry-run bench $M7 --backend cuda --fa 1 --json > $D/dry.json
pairs=${1:-3}
for i in $(seq 0 $pairs); do
  vkrama bench $M7 --backend cuda --fa 1 --json --no-save > $D/a$i.json 2>$D/a$i.err; echo "A$i rc=$?"
  $RAW run $D/dry.json cuda $D/b$i.json > /dev/null 2>&1; echo "B$i rc=$?"
done
python3 - $D $pairs <<'PY'
import json, statistics, sys
d, n = sys.argv[1], int(sys.argv[2])
out = {"pairs": []}
for i in range(1, n + 1):  # pair 0 is the warm-up
    a = {r["test"].split()[0]: r["tps"] for r in json.load(open(f"{d}/a{i}.json"))}
    b = {("pp%d" % x["n_prompt"] if x["n_prompt"] else "tg%d" % x["n_gen"]): x["avg_ts"] for x in json.load(open(f"{d}/b{i}.json"))["llama_bench"]}
    out["pairs"].append({t: {"vkrama": a[t], "raw": b[t], "ratio": round(a[t] / b[t], 4)} for t in b})
for t in ("pp512", "tg128"):
    av = [p[t]["vkrama"] for p in out["pairs"]]; bv = [p[t]["raw"] for p in out["pairs"]]
    rs = [p[t]["ratio"] for p in out["pairs"]]
    out[t] = {"vkrama_median": statistics.median(av), "raw_median": statistics.median(bv), "ratio_median": statistics.median(rs), "ratios": rs}
    print(t, "vkrama", round(statistics.median(av), 2), f"({min(av):.1f}-{max(av):.1f})", "raw", round(statistics.median(bv), 2), f"({min(bv):.1f}-{max(bv):.1f})", "ratio median", statistics.median(rs), rs)
json.dump(out, open(f"{d}/fidelity.json", "w"), indent=2)
PY
cp $D/fidelity.json $D/dry.json $OUT/ 2>/dev/null; tail -3 $D/a1.err
