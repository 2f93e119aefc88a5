"""The search for one stack's fastest llama-bench settings: coordinate search with
successive halving and noise-aware dropping, within a time budget.

Stage: tune. Pure: it calls the `Measure` it is given (the session runs llama-bench; tests
give a deterministic response surface) and a clock, and decides; it runs, reads and prints
nothing itself.

How it goes:
1. The defaults alone, once: the baseline, and how long one configuration's repetition
   takes, which prices every later trial against the budget.
2. One flag at a time (space.ORDER), every allowed value of it with the others held at the
   best so far, in one trial (one llama-bench process: a comma list). Values slower than the
   leader beyond noise are dropped, then the slower half; the rest run again at twice the
   repetitions, their samples pooled, until one is left or `rounds` are done. The flag moves
   only to a surviving value faster than the current one beyond noise.
3. Defaults against the best, side by side, for the gain. A best that is slower than the
   defaults beyond noise there is dropped for the defaults: never worse than defaults.
A trial starts only if it and that final comparison (two processes when the best differs
from the defaults in more than one flag, see `space.together`) fit in what is left of the
budget, and it may run no longer than what is left.

"Beyond noise" here is Welch's t-test (`noise.faster_beyond_noise`): the gap between two
means against the standard error of that gap, so that more repetitions separate closer
values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vkrama.errors import ExitStatus, VkramaError
from vkrama.tune.noise import NO_FIGURE, Score, faster_beyond_noise
from vkrama.tune.space import Flags, Space, together

# One trial: configurations measured together, at `repetitions` each, in at most
# `timeout_s` seconds; per configuration a Score, or the reason the stack refused it.
Measure = Callable[[Sequence[Flags], int, float], Sequence["Score | str"]]


@dataclass(frozen=True)
class Sweep:
    """One flag's sweep: what each value scored (or why it was refused), and what was kept.
    (Not a `progress.Step`: those are the lines a Reporter shows.)"""

    flag: str
    tried: dict[str, Score | str]
    kept: str


@dataclass(frozen=True)
class Tuned:
    defaults: dict[str, str]
    best: dict[str, str]
    default_score: Score
    best_score: Score
    sweeps: list[Sweep] = field(default_factory=list)
    trials: int = 0
    spent_s: float = 0.0
    stopped_by_budget: bool = False

    @property
    def gain(self) -> float:
        return self.best_score.mean / self.default_score.mean

    @property
    def beyond_noise(self) -> bool:
        return self.best != self.defaults and faster_beyond_noise(
            self.best_score, self.default_score
        )

    @property
    def changed(self) -> dict[str, str]:
        """The flags the best sets differently from the defaults."""
        return {f: v for f, v in self.best.items() if self.defaults.get(f) != v}


class _Clocked:
    """Trials against the budget. A trial costs a start per llama-bench process (container,
    model load; the first one also compiles a GPU stack's kernels) and a time per
    configuration and repetition (plus llama-bench's one warm-up run of each). Where scores
    say what a repetition took, the start is what is left of the trial, its smallest seen;
    else the whole trial is priced per repetition. Both err long: the slowest repetition
    seen prices all.

    The first trial's start never prices a start: it alone pays the one-off costs (CUDA's
    JIT of its kernels, Vulkan's pipeline compiles, the model's first read). On an H200
    (2026-12-04) cuda's first trial took 56 s of its 120 s share, every later trial was
    priced above the 64 s left, and cuda was 'tuned' with nothing but its defaults against
    a vulkan/nvidia that had tried four flags. Until a second trial is seen, a trial is
    priced by its repetitions alone: a stack overruns its share by at most one warm start.

    A trial in which a value was refused prices nothing but its repetitions: its time holds
    a failed process and the one-by-one reruns that found the refused value, which later
    trials do not pay (a refused `-ctk q4_0` once priced `-t` out with 50 s of 240 left)."""

    def __init__(self, measure: Measure, clock: Callable[[], float], budget_s: float) -> None:
        self.measure, self.clock, self.budget_s = measure, clock, budget_s
        self.start = clock()
        self.unit_s = 0.0
        self.start_s: float | None = None
        self.timed = False  # llama-bench's own timing known (Score.rep_s)
        self.trials = 0

    @property
    def spent_s(self) -> float:
        return self.clock() - self.start

    @property
    def left_s(self) -> float:
        return max(self.budget_s - self.spent_s, 0.0)

    def price(self, configs: int, repetitions: int, processes: int = 1) -> float:
        if self.start_s is not None:
            return self.start_s * processes + self.unit_s * configs * (repetitions + 1)
        if self.timed:  # only the first, cold start seen: the repetitions and warm-ups alone
            return self.unit_s * configs * (repetitions + 1)
        return self.unit_s * configs * repetitions

    def affords(self, configs: int, repetitions: int, reserve: float = 0.0) -> bool:
        return self.spent_s + self.price(configs, repetitions) + reserve <= self.budget_s

    def run(
        self, configs: Sequence[Flags], repetitions: int, timeout_s: float | None = None
    ) -> Sequence[Score | str]:
        """Measure `configs`, for no longer than what is left (or `timeout_s`, if less)."""
        left = self.left_s if timeout_s is None else min(timeout_s, self.left_s)
        began = self.clock()
        scores = self.measure(configs, repetitions, left)
        took = self.clock() - began
        self.trials += 1
        refused = any(isinstance(s, str) for s in scores)
        timed = [s.rep_s for s in scores if isinstance(s, Score) and s.rep_s > 0]
        if timed:
            self.timed = True
            self.unit_s = max(self.unit_s, *timed)
        if refused:
            return scores  # see the class's docstring: its time prices nothing else
        if timed and len(timed) == len(scores):
            processes = len(together(configs))
            start = max(took - sum(timed) * (repetitions + 1), 0.0) / processes
            if self.trials > 1:  # see the class's docstring: the first start is cold
                self.start_s = start if self.start_s is None else min(self.start_s, start)
        elif not timed:
            self.unit_s = max(self.unit_s, took / (len(configs) * repetitions))
        return scores


def search(
    space: Space,
    measure: Measure,
    clock: Callable[[], float],
    budget_s: float,
    repetitions: int = 3,
    rounds: int = 3,
) -> Tuned:
    """The best configuration `space` holds within `budget_s` (see the module's steps)."""
    clocked = _Clocked(measure, clock, budget_s)
    defaults = dict(space.defaults)
    (first,) = clocked.run([defaults], repetitions)
    # A model too big for the GPU: fewer layers on it until one runs (the space offers -ngl
    # only then); that becomes the baseline the search starts from.
    for layers in space.candidates.get("ngl", ()) if isinstance(first, str) else ():
        if clocked.spent_s > budget_s:
            break
        (first,) = clocked.run([{**defaults, "ngl": layers}], repetitions)
        if isinstance(first, Score):
            defaults["ngl"] = layers
            break
    if clocked.left_s <= 0:
        took = "did not finish in" if isinstance(first, str) else "alone took"
        raise VkramaError(
            f"--budget is too small for one trial: {budget_s:.3g}s for this stack, and the"
            f" defaults {took} {clocked.spent_s:.0f}s",
            hint=f"give --budget of at least {math.ceil(clocked.spent_s * 8 / 60)}m,"
            " or smaller -p/-n sizes",
            status=ExitStatus.BUDGET,
        )
    if isinstance(first, str) and first.startswith(NO_FIGURE):  # it ran, unmeasured
        raise VkramaError(
            f"cannot tune for joules: at llama-bench's defaults, {first}",
            hint="each test's counted repetitions must run for seconds: raise -r, -p or -n",
            status=ExitStatus.NOTHING_FITS,
        )
    if isinstance(first, str):
        tried = (
            f" (nor -ngl {','.join(space.candidates['ngl'])})" if "ngl" in space.candidates else ""
        )
        raise VkramaError(
            f"no candidate fits: the stack does not run the model at llama-bench's defaults"
            f"{tried}: {first}",
            hint="try a smaller model or quantization, or another backend",
            status=ExitStatus.NOTHING_FITS,
        )
    best, scores = dict(defaults), {_key(defaults): first}
    sweeps: list[Sweep] = []
    stopped = False
    for flag in space.flags:
        values = space.values(flag, best)
        if len(values) < 2:
            continue
        # The final side-by-side comparison, kept back: one process while the best differs
        # from the defaults in one flag at most, two after (llama-bench would cross lists).
        moved = {f for f, v in best.items() if defaults.get(f) != v} | {flag}
        reserve = clocked.price(2, repetitions, processes=1 if len(moved) <= 1 else 2)
        sweep, stopped = _sweep(clocked, flag, values, best, scores, repetitions, rounds, reserve)
        if sweep is not None:
            sweeps.append(sweep)
            best[flag] = sweep.kept
        if stopped:
            break
    default_score, best_score = scores[_key(defaults)], scores[_key(best)]
    if best != defaults:
        side = clocked.run([defaults, best], repetitions)
        if all(isinstance(s, Score) for s in side):
            default_score, best_score = side  # type: ignore[assignment]
            if faster_beyond_noise(default_score, best_score):
                best, best_score = dict(defaults), default_score
    return Tuned(
        defaults, best, default_score, best_score, sweeps, clocked.trials, clocked.spent_s,
        stopped,
    )  # fmt: skip


def _sweep(
    clocked: _Clocked,
    flag: str,
    values: tuple[str, ...],
    best: dict[str, str],
    scores: dict[tuple[tuple[str, str], ...], Score],
    repetitions: int,
    rounds: int,
    reserve: float,
) -> tuple[Sweep | None, bool]:
    """One flag's successive halving; (its sweep or None if nothing ran, out of budget?)."""
    own = best[flag]
    tried: dict[str, Score | str] = {}
    alive = list(values)
    reps = repetitions
    for _ in range(rounds):
        if not clocked.affords(len(alive), reps, reserve):
            return (_kept(flag, own, alive, tried, best, scores) if tried else None), True
        configs = [{**best, flag: v} for v in alive]
        for value, found in zip(alive, clocked.run(configs, reps), strict=True):
            if isinstance(found, str):
                tried[value] = found
            else:
                earlier = tried.get(value)
                tried[value] = found.pooled(earlier if isinstance(earlier, Score) else None)
        alive = [v for v in alive if isinstance(tried[v], Score)]
        if not alive:
            break
        ranked = sorted(alive, key=lambda v: _score(tried, v).mean, reverse=True)
        leader = _score(tried, ranked[0])
        ranked = [v for v in ranked if not faster_beyond_noise(leader, _score(tried, v))]
        alive = ranked[: max(1, math.ceil(len(ranked) / 2))] if len(ranked) > 2 else ranked
        if len(alive) == 1:
            break
        reps *= 2
    return _kept(flag, own, alive, tried, best, scores), False


def _kept(
    flag: str,
    own: str,
    alive: list[str],
    tried: dict[str, Score | str],
    best: dict[str, str],
    scores: dict[tuple[tuple[str, str], ...], Score],
) -> Sweep:
    """Keep `own` unless the fastest value still alive beats it beyond noise (a value the
    halving dropped never comes back: its mean rests on fewer repetitions); the kept
    value's pooled score is remembered for the end."""
    measured = {v: s for v, s in tried.items() if isinstance(s, Score)}
    kept = own
    survivors = [v for v in alive if v in measured]
    if own in measured:
        if survivors:
            leader = max(survivors, key=lambda v: measured[v].mean)
            if faster_beyond_noise(measured[leader], measured[own]):
                kept = leader
        scores[_key({**best, flag: kept})] = measured[kept]
    return Sweep(flag, tried, kept)


def _score(tried: dict[str, Score | str], value: str) -> Score:
    found = tried[value]
    assert isinstance(found, Score)
    return found


def _key(flags: Flags) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(flags.items()))
