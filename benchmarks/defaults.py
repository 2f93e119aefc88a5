"""Bench defaults: what a user gets from `vkrama bench` and from `ramalama bench` untuned.

Stage: benchmarks (not part of vkrama). Both run llama-bench in the same image
(localhost/vkrama/cpu) on the same model; each tool picks its own threads, batch and
offload. vkrama's default threads are the physical cores; ramalama's are 4 on a machine with
fewer cores (its `--threads` help says so). Goal: vkrama tg128 ≥ ramalama tg128. Must not
let ramalama reach a registry: it gets `--pull never` and a store under benchmarks/.cache/.
"""

from __future__ import annotations

import shlex

from benchmarks.harness import BENCH_TIMEOUT_S, Outcome, Row, alternate, ratio_row, run
from benchmarks.inputs import RAMALAMA_NO_REGISTRY, Session
from benchmarks.llama_bench import ramalama_tps, vkrama_tps

NAME = "defaults"
TITLE = "bench defaults"
GOAL = 1.0


def measure(session: Session) -> Outcome:
    outcome = Outcome()
    model = session.model("tiny" if session.quick else "bench")
    image = session.image("cpu")
    vk_argv = session.vkrama("bench", str(model), "--backend", "cpu", "--json", "--no-save")

    def side_a() -> dict[str, float]:
        ran = run(vk_argv, env=session.env(), what="vkrama bench", timeout=BENCH_TIMEOUT_S)
        return vkrama_tps(ran.stdout, "vkrama bench")

    rama_flags = ["--image", image, *RAMALAMA_NO_REGISTRY, "--format", "json"]

    def side_b() -> dict[str, float]:
        argv = session.ramalama("bench", *rama_flags, session.ramalama_model(model))
        ran = run(
            argv,
            env=session.ramalama_env(),
            what="ramalama bench",
            peer=True,
            timeout=BENCH_TIMEOUT_S,
        )
        return ramalama_tps(ran.stdout, "ramalama bench")

    sides = alternate(side_a, side_b, session.pairs, session.warmup)
    if sides.a_error:
        outcome.vkrama_failures.append(f"{TITLE}: {sides.a_error}")
    command = "vkrama bench MODEL --backend cpu"
    for test in sorted(set(sides.a) | set(sides.b)):
        row = Row(
            TITLE,
            f"cpu {test}",
            "t/s",
            "vkrama bench",
            sides.stats("a", test),
            "ramalama bench",
            sides.stats("b", test),
            command=command,
        )
        if test.startswith("tg"):
            row.goal = f"A/B ≥ {GOAL}"
        row.note = sides.a_error or sides.b_error
        outcome.rows.append(ratio_row(row, GOAL if row.goal else None))
    outcome.notes.append(
        "ramalama side: `ramalama --store benchmarks/.cache/ramalama-store bench "
        f"{shlex.join(rama_flags)} file://MODEL` (its defaults otherwise: --threads 4 here, "
        "llama-bench's -p 512 -n 128 -r 5)"
    )
    return outcome
