"""Bench fidelity: does `vkrama bench` report the t/s that llama-bench itself reports?

Stage: benchmarks (not part of vkrama). A is `vkrama bench --json`; B is the exact
`podman run … llama-bench` command that `vkrama --dry-run bench` prints for the same cell
(same image, devices, environment and llama-bench arguments), run by hand with `--rm`. Goal:
A/B ≥ 0.98 for every test, on cpu and on Vulkan through lavapipe. Must not build anything
but the images and model it needs.
"""

from __future__ import annotations

import shlex

from benchmarks.harness import BENCH_TIMEOUT_S, Outcome, Row, SideFailed, alternate, ratio_row, run
from benchmarks.inputs import Session, planned_podman_run
from benchmarks.llama_bench import raw_tps, vkrama_tps

NAME = "fidelity"
TITLE = "bench fidelity"
GOAL = 0.98

# (backend, vk driver); lavapipe is the Vulkan device every machine has.
CELLS = (("cpu", None), ("vulkan", "lavapipe"))


def bench_args(session: Session, backend: str) -> tuple[str, list[str]]:
    """(model kind, llama-bench sizes). cpu: the ~0.66 B Q4_0 model at llama-bench's default
    sizes; lavapipe runs that model at ~3 t/s, so it gets the tiny model at the same sizes.
    Two repetitions per run (the pairs repeat it). --quick: tiny model, tiny sizes."""
    if session.quick:
        return "tiny", ["-p", "64", "-n", "16", "-r", "1"]
    return ("bench" if backend == "cpu" else "tiny"), ["-p", "512", "-n", "128", "-r", "2"]


def measure(session: Session) -> Outcome:
    outcome = Outcome()
    for backend, driver in CELLS:
        label = f"{backend}/{driver}" if driver else backend
        selection = ["--backend", backend] + (["--vk-driver", driver] if driver else [])
        kind, args = bench_args(session, backend)
        try:
            model = session.model(kind)
            session.image(backend)
            planned = run(
                session.vkrama("--dry-run", "bench", str(model), *selection, *args),
                env=session.env(),
                what=f"vkrama --dry-run bench ({label})",
            )
            raw = planned_podman_run(planned.stdout, "vkrama --dry-run bench", ("--rm",))
        except SideFailed as failed:
            outcome.vkrama_failures.append(f"{TITLE} {label}: {failed}")
            continue
        vk_argv = session.vkrama("bench", str(model), *selection, *args, "--json", "--no-save")

        def side_a(argv: list[str] = vk_argv, label: str = label) -> dict[str, float]:
            ran = run(
                argv, env=session.env(), what=f"vkrama bench ({label})", timeout=BENCH_TIMEOUT_S
            )
            return {**vkrama_tps(ran.stdout, "vkrama bench"), "wall": ran.seconds}

        def side_b(argv: list[str] = raw, label: str = label) -> dict[str, float]:
            ran = run(argv, what=f"podman run llama-bench ({label})", timeout=BENCH_TIMEOUT_S)
            return {**raw_tps(ran.stdout, "llama-bench"), "wall": ran.seconds}

        sides = alternate(side_a, side_b, session.pairs, session.warmup)
        if sides.a_error:
            outcome.vkrama_failures.append(f"{TITLE} {label}: {sides.a_error}")
        command = shlex.join(["vkrama", "bench", f"{kind.upper()}_MODEL", *selection, *args])
        tests = [t for t in sorted(set(sides.a) | set(sides.b)) if t != "wall"]
        for test in tests:
            row = Row(
                TITLE,
                f"{label}, {kind} model: {test}",
                "t/s",
                "vkrama bench",
                sides.stats("a", test),
                "raw podman run llama-bench",
                sides.stats("b", test),
                goal=f"A/B ≥ {GOAL}",
                command=command,
            )
            row.note = sides.a_error or sides.b_error
            outcome.rows.append(ratio_row(row, GOAL))
        wall = Row(
            TITLE,
            f"{label} wall clock",
            "s",
            "vkrama bench",
            sides.stats("a", "wall"),
            "raw podman run llama-bench",
            sides.stats("b", "wall"),
            note="whole command, model load and container start included",
            command=command,
        )
        outcome.rows.append(ratio_row(wall, None, invert=True))
        outcome.notes.append(f"{label}: raw side = `{shlex.join(raw)}`")
    return outcome
