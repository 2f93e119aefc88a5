"""bench --tuned: each cell runs each test at the flags `vkrama tune` found for that test on
its own stack.

Stage: bench (reads `results.tunings`' records, plans nothing itself). Pure: tunings in,
llama-bench parameters out. Must not print.

A tuning answers one question: this stack, this objective, this test (sizes and depths).
A bench cell that runs pp512 and tg128 takes the tuning made for pp512 for its pp test and
the one for tg128 for its tg test (one made for both counts for both); when the two differ
the cell is split into one per test, so that no test runs at flags tuned for another. A flag
the user gave (--threads, --ngl, --fa, --split-mode, or after `--`) always wins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from vkrama.backends.env_switches import env_of, is_switch
from vkrama.bench.plan import BenchCell, BenchParams, Slot, plan_cell
from vkrama.llama_flags import FLAG
from vkrama.results.tunings import TunedStack, for_test, test_label

if TYPE_CHECKING:
    from vkrama.stack import Stack
    from vkrama.store import LocalModel

NOT_TUNED = "not tuned"


@dataclass(frozen=True)
class Tuned:
    """One cell's share of a tuned bench: its parameters, and what it says about them."""

    params: BenchParams
    label: str  # the cell's `tuned`: "-ub 256 -fa on", "defaults" or "not tuned for pp512"
    said: str  # for the progress line: "pp512 at its tuning for pp512: -ub 256"
    split_mode: str | None = None  # a tuned -sm: the session sets it on the cell's split
    env: dict[str, str] = field(default_factory=dict)  # kept switches: the cell's environment


def plan(
    params: BenchParams,
    found: list[TunedStack],
    backend: str,
    driver: str | None,
    given: frozenset[str] = frozenset(),
) -> list[Tuned]:
    """The cells of one stack: one when every test it runs has the same tuning (or none),
    else one per test. `given`: flags the user set outside `params` (e.g. "sm")."""
    kinds = [k for k, n in (("pp", params.n_prompt), ("tg", params.n_gen)) if n]
    p, n, depth = params.n_prompt, params.n_gen, params.depth

    def made_for(kind: str) -> TunedStack | None:
        own = for_test(found, backend, driver, kind, test_label(kind, p, n, depth))
        if own is None and len(kinds) == 2:
            return for_test(found, backend, driver, "both", test_label("both", p, n, depth))
        return own

    picks = {kind: made_for(kind) for kind in kinds}
    if len(kinds) == 2 and picks["pp"] is not picks["tg"]:
        parts = [(replace(params, n_gen=0), "pp", "pp"), (replace(params, n_prompt=0), "tg", "tg")]
    else:  # one cell: named by every test it runs ("pp512+tg128")
        parts = [(params, kinds[0], "both" if len(kinds) == 2 else kinds[0])]
    return [apply(part, picks[kind], given, test_label(said, p, n, depth))
            for part, kind, said in parts]  # fmt: skip


def apply(
    params: BenchParams, tuning: TunedStack | None, given: frozenset[str], test: str
) -> Tuned:
    """`params` at `tuning`'s flags, but for those the user gave.

    -t and -ngl replace vkrama's own (llama-bench appends a repeated flag's values); -sm
    goes to the cell's split; the rest go before the user's passthrough arguments."""
    if tuning is None:
        return Tuned(
            params,
            f"{NOT_TUNED} for {test}",
            f"{test}: not tuned for it, at llama-bench's defaults",
        )
    user = set(given)
    user |= {f for f, v in (("t", params.threads), ("ngl", params.ngl)) if v is not None}
    user |= {"fa"} if params.flash_attn else set()
    user |= {f for f in tuning.changed if not is_switch(f) and FLAG[f].bench in params.extra_args}
    changed = {f: v for f, v in tuning.changed.items() if f not in user}
    env = env_of(changed)  # the stack's own switches: its environment, never arguments
    changed = {f: v for f, v in changed.items() if not is_switch(f)}
    flags = [a for f, v in changed.items() for a in (FLAG[f].bench, v)]
    label = " ".join([*flags, *(f"{k}={v}" for k, v in env.items())]) or "defaults"
    threads = int(changed.pop("t")) if "t" in changed else params.threads
    ngl = int(changed.pop("ngl")) if "ngl" in changed else params.ngl
    split_mode = changed.pop("sm", None)
    extra = tuple(a for flag, value in changed.items() for a in (FLAG[flag].bench, value))
    applied = replace(params, threads=threads, ngl=ngl, extra_args=(*extra, *params.extra_args))
    said = f"{test} at its tuning for {tuning.test}: {label}"
    kept = [FLAG[f].bench for f in tuning.changed if f in user]
    if kept:
        said += f" (yours kept: {' '.join(kept)})"
    return Tuned(applied, label, said, split_mode, env)


def cells(
    params: BenchParams,
    found: list[TunedStack],
    ready: Stack,
    given: frozenset[str],
    slot_of: Callable[[Stack, int], Slot],
    first: int,
    model: LocalModel,
    threads: int,
) -> list[BenchCell]:
    """One stack's cells (see `plan`), planned: a tuned -sm set on the choice's split;
    `slot_of(ready, position)` places each in the run, from position `first` on."""
    choice = ready.choice
    planned: list[BenchCell] = []
    for part in plan(params, found, choice.backend, choice.driver, given):
        mine = ready
        if part.split_mode is not None and choice.split is not None:
            split = replace(choice.split, mode=part.split_mode)
            mine = replace(ready, choice=replace(choice, split=split))
        slot = slot_of(mine, first + len(planned))
        if part.env:  # the user's --env wins over a tuned switch
            slot = replace(slot, env_overrides={**part.env, **slot.env_overrides})
        cell = plan_cell(slot, model.files, model.name, part.params,
                         threads=part.params.threads or threads)  # fmt: skip
        planned.append(replace(cell, tuned=part.label, tuning=part.said))
    return planned
