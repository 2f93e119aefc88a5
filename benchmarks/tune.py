"""Tune: what `vkrama tune` gains over llama-bench's defaults per stack here, and what the
search costs.

Stage: benchmarks (not part of vkrama). Runs `vkrama tune MODEL --backend B --json
--no-save` once per stack (cpu, vulkan/lavapipe) and reports tuned ÷ defaults, as the
tuning's own side-by-side trial measured them, and the wall time the tuning took against
its budget. No goal: a stack whose defaults are already best gains 1.00× honestly.
"""

from __future__ import annotations

import json

from benchmarks.harness import BENCH_TIMEOUT_S, Outcome, Row, SideFailed, Stats, run
from benchmarks.inputs import Session

NAME = "tune"
TITLE = "tune"
# stack -> (its cells, the model and budget of a full run). lavapipe runs the 0.66 B bench
# model at a few t/s here: one trial of it would outlast any budget, so it tunes the tiny one.
STACKS = {
    "cpu": (("--backend", "cpu"), "bench", "8m"),
    "vulkan/lavapipe": (("--backend", "vulkan", "--vk-driver", "lavapipe"), "tiny", "3m"),
}


def measure(session: Session) -> Outcome:
    outcome = Outcome()
    session.image("cpu")
    session.image("vulkan")
    for stack, (cells, kind, budget) in STACKS.items():
        # Quick: the tiny model, one flag, a small prompt, 45 s; full: every flag at pp512.
        model = session.model("tiny" if session.quick else kind)
        sizes = ("-p", "64", "--flags", "fa", "--budget", "45s") if session.quick else (
            "-p", "512", "--budget", budget)  # fmt: skip
        argv = session.vkrama("tune", str(model), *cells, *sizes, "--json", "--no-save")
        try:
            ran = run(argv, env=session.env(), what=f"vkrama tune {stack}", timeout=BENCH_TIMEOUT_S)
            (tuned,) = json.loads(ran.stdout)
        except (SideFailed, ValueError) as failed:
            outcome.vkrama_failures.append(f"{TITLE} {stack}: {failed}")
            continue
        changed = [f"-{f} {v}" for f, v in tuned["flags"].items() if tuned["defaults"][f] != v]
        flags = " ".join(changed) or "defaults"
        noise = "beyond noise" if tuned["beyond_noise"] else "within noise"
        command = f"vkrama tune {model.name} {' '.join(cells)} {' '.join(sizes)}"
        gain = Row(
            TITLE, f"{stack} {tuned['test']}", "t/s", "tuned", Stats.of([tuned["tps"]]),
            "defaults", Stats.of([tuned["default_tps"]]), command=command,
            note=f"{flags}; {noise} (± {tuned['tps_stddev']:.1f} vs"
                 f" ± {tuned['default_stddev']:.1f}); {tuned['trials']} trials",
        )  # fmt: skip
        gain.ratio = tuned["gain"]
        gain.ratio_text = f"{tuned['gain']:.3f}×"
        took = Row(
            TITLE, f"{stack} time tuning took", "s", "vkrama tune", Stats.of([ran.seconds]),
            command=command,
            note=f"search {tuned['spent_s']:.0f} s of the budget"
                 + (", budget ran out" if tuned["stopped_by_budget"] else ""),
        )  # fmt: skip
        outcome.rows += [gain, took]
    return outcome
