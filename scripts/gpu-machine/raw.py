#!/usr/bin/env python3
"""vkrama against itself: the raw `podman run` of the commands `vkrama --dry-run bench` prints.

Stage: outside vkrama's pipeline, like the rest of scripts/gpu-machine (called by run.sh).
It turns what `vkrama --dry-run bench --json` prints into one-shot `podman run` commands: a
cell's exact passthrough with another program (vulkaninfo sees what llama-bench would), or
the bench itself without vkrama, whose t/s vkrama's own must match (goal >= 0.99). It never
changes those commands beyond `--rm` and a fresh `--name`, so what runs is what the dry run
printed. Standard library only (`ratio` reads llama-bench's JSON with vkrama's parser).

    raw.py argv DRY.json CELL [CMD...]  the dry run's argv for CELL (cuda, vulkan/nvidia),
                                        its command replaced by CMD if given, one per line;
                                        creates the cache dirs it mounts
    raw.py run DRY.json CELL OUT.json   run CELL's dry-run command, keep llama-bench's JSON
    raw.py ratio BENCH.json RAW.json... vkrama's t/s ÷ raw for each cell and test
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def cell_argv(dry: list[dict[str, Any]], cell: str, command: list[str] | None = None) -> list[str]:
    """The dry run's podman argv for `cell` ("cuda", "vulkan/nvidia"), made one-shot (--rm, a
    fresh --name); with `command`, everything after the image is replaced by it."""
    wanted = [
        c for c in dry if (f"{c['backend']}/{c['driver']}" if c["driver"] else c["backend"]) == cell
    ]
    if not wanted:
        raise SystemExit(f"no {cell} cell in the dry run (has: {[c['backend'] for c in dry]})")
    argv = list(wanted[0]["command"])
    name = argv.index("--name") + 1
    argv[name] = f"{argv[name]}-raw-{os.getpid()}"
    argv.insert(2, "--rm")
    if command is not None:
        image = next(i for i, a in enumerate(argv) if a.startswith("localhost/vkrama/"))
        argv = argv[: image + 1] + command
    return argv


def _cell(row: dict[str, Any]) -> str:
    return f"{row['backend']}/{row['driver']}" if row["driver"] else row["backend"]


def bind_sources(argv: list[str]) -> list[Path]:
    """Host directories the argv bind-mounts (caches vkrama creates before a real run)."""
    found = []
    for flag, value in itertools.pairwise(argv):
        if flag == "--mount" and value.startswith("type=bind,"):
            fields = dict(f.split("=", 1) for f in value.split(",") if "=" in f)
            found.append(Path(fields["src"]))
    return found


def make_caches(argv: list[str]) -> None:
    """Create the compile-cache directories the argv mounts, as vkrama does before a real
    run (a dry run makes nothing, and podman refuses a missing bind source)."""
    for source in bind_sources(argv):
        if not source.suffix and not source.is_dir():  # a cache directory, not the model
            source.mkdir(parents=True)
            source.chmod(0o777)  # the containers' non-root user writes it


def raw(dry: list[dict[str, Any]], cell: str, out: Path) -> int:
    argv = cell_argv(dry, cell)
    make_caches(argv)
    print("+", " ".join(argv), flush=True)
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr[-3000:])
    text = done.stdout[done.stdout.find("[") :] if "[" in done.stdout else "[]"
    out.write_text(json.dumps({"cell": cell, "argv": argv, "rc": done.returncode,
                               "seconds": round(time.monotonic() - started, 1),
                               "llama_bench": json.loads(text)}, indent=2))  # fmt: skip
    return done.returncode


def ratios(bench_rows: list[dict[str, Any]], raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """vkrama bench's t/s ÷ the raw run's, per cell and test (the same test names)."""
    sys.path.insert(0, str(REPO))
    from vkrama.bench.measurements import parse

    found = []
    for run in raws:
        varied = any("fa=" in r["test"] for r in bench_rows)
        measured, _ = parse(json.dumps(run["llama_bench"]), flash_attn_varied=varied)
        for m in measured:
            ours = [
                r for r in bench_rows
                if r["status"] == "ok" and r["test"] == m.test and _cell(r) == run["cell"]
            ]  # fmt: skip
            if ours:
                found.append({"cell": run["cell"], "test": m.test, "vkrama": ours[0]["tps"],
                              "raw": m.tps, "ratio": round(ours[0]["tps"] / m.tps, 4)})  # fmt: skip
    return found


def main(argv: list[str]) -> int:
    if argv[:1] == ["argv"]:
        dry = json.loads(Path(argv[1]).read_text())
        found = cell_argv(dry, argv[2], argv[3:] or None)
        make_caches(found)  # vulkaninfo runs before any bench made them
        print("\n".join(found))
        return 0
    if argv[:1] == ["run"]:
        return raw(json.loads(Path(argv[1]).read_text()), argv[2], Path(argv[3]))
    if argv[:1] == ["ratio"]:
        rows = json.loads(Path(argv[1]).read_text())
        found = ratios(rows, [json.loads(Path(p).read_text()) for p in argv[2:]])
        for r in found:
            print(f"{r['cell']:<14} {r['test']:<16} vkrama {r['vkrama']:9.2f}  raw {r['raw']:9.2f}"
                  f"  vkrama/raw {r['ratio']:.4f}")  # fmt: skip
        print(json.dumps(found))
        return 0 if found else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
