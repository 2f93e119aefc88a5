"""A search's trial as llama-bench runs it, and llama-bench's rows as the search's scores.

Stage: tune. Pure: configurations in, `BenchParams` out; measurements in, `Score`s out.
One llama-bench process runs a whole sweep of one flag (`-ub 512,128,256`: llama-bench
crosses comma lists), so a trial is one container, not one per value. Rows are matched to
configurations by the settings each row reports (`Measurement.flags`), never by position.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from vkrama.backends.env_switches import is_switch
from vkrama.bench.plan import BenchParams
from vkrama.progress import Reporter, Step
from vkrama.results.records import CellResult, Measurement
from vkrama.stack import Stack
from vkrama.tune.noise import Score
from vkrama.tune.search import Measure
from vkrama.tune.space import Flags
from vkrama.tune.switches import spelt

# Runs configurations at a repetition count on a stack, within a timeout (seconds): the
# session's real llama-bench.
Trial = Callable[[Stack, Sequence[Flags], int, float], list[CellResult]]

OBJECTIVES = ("pp", "tg", "both")


def params(base: BenchParams, configs: Sequence[Flags]) -> BenchParams:
    """`base` running `configs` (one flag varied at most) as comma lists.

    vkrama's llama-bench line always carries -t and -ngl, and -sm on a split cell
    (llama-bench appends a repeated flag's values, it does not replace them), so their
    first value goes there (-sm's through the session's choice) and only the rest into the
    extra arguments."""
    extra: list[str] = []
    threads, ngl = base.threads, base.ngl
    for flag in configs[0]:
        if is_switch(flag):
            continue  # the cell's environment, not llama-bench's (tune.session)
        values = list(dict.fromkeys(c[flag] for c in configs))
        if flag == "t":
            threads, values = int(values[0]), values[1:]
        elif flag == "ngl":
            ngl, values = int(values[0]), values[1:]
        elif flag == "sm":
            values = values[1:]
        if values:
            extra += [f"-{flag}", ",".join(values)]
    return replace(base, threads=threads, ngl=ngl, flash_attn=(), extra_args=tuple(extra))


def score(rows: Sequence[Measurement], flags: Flags) -> Score | None:
    """The objective of one configuration: per repetition, the geometric mean of its rows
    (pp and tg, every depth), so each counts alike and the noise stays per repetition."""
    mine = [m for m in rows if all(m.flags.get(f, v) == v for f, v in flags.items())]
    if not mine or not all(m.samples for m in mine):
        return None
    count = min(len(m.samples) for m in mine)
    rep_s = sum((m.n_prompt + m.n_gen) / m.tps for m in mine if m.tps > 0)
    return Score(
        tuple(math.prod(m.samples[i] for m in mine) ** (1 / len(mine)) for i in range(count)),
        rep_s,
    )


def name(ready: Stack) -> str:
    choice = ready.choice
    return f"{choice.backend}/{choice.driver}" if choice.driver else choice.backend


def measure(
    ready: Stack, trial: Trial, on_progress: Reporter, clock: Callable[[], float] = time.monotonic
) -> Measure:
    """The search's `Measure` over real trials; a process that failed as a whole (one
    refused value fails all of llama-bench) runs its values one by one to learn which, in
    what is left of the trial's time."""

    def run(configs: Sequence[Flags], repetitions: int, timeout_s: float) -> list[Score | str]:
        varied = [f for f in configs[0] if len({c[f] for c in configs}) > 1]
        said = ", ".join(spelt(f, ",".join(c[f] or "unset" for c in configs)) for f in varied)
        on_progress(Step(f"{name(ready)}: trying {said or 'defaults'} ({repetitions} reps)"))
        deadline = clock() + timeout_s
        return scores(trial, ready, configs, repetitions, lambda: deadline - clock())

    return run


def scores(
    trial: Trial,
    ready: Stack,
    configs: Sequence[Flags],
    repetitions: int,
    left: Callable[[], float],
) -> list[Score | str]:
    """Each configuration's score, or why the stack refused it (llama-bench's reason).
    `left`: the seconds the trial may still take; a rerun starts only while some are."""
    ran = trial(ready, configs, repetitions, left())
    rows = [m for r in ran if r.ok for m in r.measurements]
    found: list[Score | str] = []
    for config in configs:
        measured = score(rows, config)
        if measured is None and len(configs) > 1 and not all(r.ok for r in ran) and left() > 0:
            found += scores(trial, ready, [config], repetitions, left)
        elif measured is None:
            reasons = [r.reason for r in ran if not r.ok]
            found.append(reasons[0] if reasons else "llama-bench reported no row for it")
        else:
            found.append(measured)
    return found
