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
from vkrama.bench.energy import TOO_SHORT_HINT
from vkrama.bench.plan import BenchParams
from vkrama.progress import Reporter, Step
from vkrama.results.records import CellResult, Measurement
from vkrama.stack import Stack
from vkrama.tune.noise import NO_FIGURE, Score
from vkrama.tune.search import Measure
from vkrama.tune.space import Flags
from vkrama.tune.switches import spelt

# Runs configurations at a repetition count on a stack, within a timeout (seconds): the
# session's real llama-bench.
Trial = Callable[[Stack, Sequence[Flags], int, float], list[CellResult]]

OBJECTIVES = ("pp", "tg", "both", "joules")
JOULES = "joules"  # tokens per joule above the idle draw (see `score`)


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


def score(rows: Sequence[Measurement], flags: Flags, objective: str = "pp") -> Score | None:
    """The objective of one configuration: per repetition, the geometric mean of its rows
    (pp and tg, every depth), so each counts alike and the noise stays per repetition.

    For "joules" a row's value is tokens per joule above the idle draw (1 / its J/token,
    bench.energy: all its counted tokens over all the energy above idle they took). The
    counter resolves a whole test, not one repetition (a repetition is often shorter than a
    few sampling periods), so repetition i's value is that figure times its t/s over the
    mean t/s of the test: the mean is the test's own figure, the spread the speed's at the
    test's mean draw (how the draw itself varies between repetitions is not in it). A row
    without a J/token figure scores nothing (`why_not` says why)."""
    mine = _rows_of(rows, flags)
    if not mine or not all(m.samples for m in mine):
        return None
    if objective == JOULES and not all(_joules(m) for m in mine):
        return None
    count = min(len(m.samples) for m in mine)
    rep_s = sum((m.n_prompt + m.n_gen) / m.tps for m in mine if m.tps > 0)
    values = [_per_joule(m) if objective == JOULES else m.samples for m in mine]
    return Score(
        tuple(math.prod(v[i] for v in values) ** (1 / len(values)) for i in range(count)),
        rep_s,
    )


def why_not(rows: Sequence[Measurement], flags: Flags) -> str:
    """Why a configuration that ran has no tokens-per-joule figure: its rows' energy notes."""
    notes = [
        f"{m.test}: {m.energy.note if m.energy is not None else 'no energy was measured'}"
        for m in _rows_of(rows, flags)
        if not _joules(m)
    ]
    # bench's hint names llama-bench's arguments after --; tune has -r, -p and -n of its own
    notes = [n.replace(TOO_SHORT_HINT, "raise tune's -r, -p or -n to run it longer") for n in notes]
    return "; ".join(dict.fromkeys(notes))


def _rows_of(rows: Sequence[Measurement], flags: Flags) -> list[Measurement]:
    return [m for m in rows if all(m.flags.get(f, v) == v for f, v in flags.items())]


def _joules(m: Measurement) -> float | None:
    return m.energy.joules_per_token if m.energy is not None else None


def _per_joule(m: Measurement) -> tuple[float, ...]:
    """Each repetition's share of the test's tokens per joule above idle: 1 / J/token
    times its t/s over the mean t/s (so their mean is the test's figure). Scaling by the
    mean, not by tokens per counted second (their harmonic mean), keeps a test whose
    repetitions ran at uneven speeds (a loaded host) from overstating its figure."""
    per_token = _joules(m)
    assert per_token  # score() checked
    mean = sum(m.samples) / len(m.samples)
    return tuple(s / mean / per_token for s in m.samples)


def name(ready: Stack) -> str:
    choice = ready.choice
    return f"{choice.backend}/{choice.driver}" if choice.driver else choice.backend


def measure(
    ready: Stack,
    trial: Trial,
    on_progress: Reporter,
    clock: Callable[[], float] = time.monotonic,
    objective: str = "pp",
) -> Measure:
    """The search's `Measure` over real trials; a process that failed as a whole (one
    refused value fails all of llama-bench) runs its values one by one to learn which, in
    what is left of the trial's time."""

    def run(configs: Sequence[Flags], repetitions: int, timeout_s: float) -> list[Score | str]:
        varied = [f for f in configs[0] if len({c[f] for c in configs}) > 1]
        said = ", ".join(spelt(f, ",".join(c[f] or "unset" for c in configs)) for f in varied)
        on_progress(Step(f"{name(ready)}: trying {said or 'defaults'} ({repetitions} reps)"))
        deadline = clock() + timeout_s
        return scores(trial, ready, configs, repetitions, lambda: deadline - clock(), objective)

    return run


def scores(
    trial: Trial,
    ready: Stack,
    configs: Sequence[Flags],
    repetitions: int,
    left: Callable[[], float],
    objective: str = "pp",
) -> list[Score | str]:
    """Each configuration's score, or why the stack refused it (llama-bench's reason).
    `left`: the seconds the trial may still take; a rerun starts only while some are."""
    ran = trial(ready, configs, repetitions, left())
    rows = [m for r in ran if r.ok for m in r.measurements]
    found: list[Score | str] = []
    for config in configs:
        measured = score(rows, config, objective)
        if measured is None and len(configs) > 1 and not all(r.ok for r in ran) and left() > 0:
            found += scores(trial, ready, [config], repetitions, left, objective)
        elif measured is None:
            reasons = [r.reason for r in ran if not r.ok]
            if objective == JOULES and score(rows, config) is not None:
                reasons = [NO_FIGURE + why_not(rows, config)]
            found.append(reasons[0] if reasons else "llama-bench reported no row for it")
        else:
            found.append(measured)
    return found
