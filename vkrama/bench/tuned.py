"""bench --tuned: each cell runs at the flags `vkrama tune` found for its own stack.

Stage: bench (reads `results.tuned`, plans nothing itself). Pure but for `tunings`, which
reads the results database. Must not print.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vkrama.bench.plan import BenchParams
from vkrama.config import Settings
from vkrama.results import tuned as stored

if TYPE_CHECKING:
    from vkrama.backends import Choice

NOT_TUNED = "not tuned"


def tunings(settings: Settings, model_sha256: str, gpu_key: str) -> list[stored.TunedStack]:
    return stored.newest(settings, model_sha256, gpu_key)


def mine(found: list[stored.TunedStack], choice: Choice) -> stored.TunedStack | None:
    return stored.for_stack(found, choice.backend, choice.driver)


def apply(params: BenchParams, tuning: stored.TunedStack | None) -> tuple[BenchParams, str]:
    """`params` at `tuning`'s flags, and how the cell says so ("-ub 256 -fa on", "defaults",
    or "not tuned" for a stack `vkrama tune` has not tuned: it runs llama-bench's defaults).

    -t and -ngl replace vkrama's own (llama-bench appends a repeated flag's values); the
    rest go before the user's passthrough arguments."""
    if tuning is None:
        return params, NOT_TUNED
    changed = dict(tuning.changed)
    threads = int(changed.pop("t")) if "t" in changed else params.threads
    ngl = int(changed.pop("ngl")) if "ngl" in changed else params.ngl
    extra = tuple(a for flag, value in changed.items() for a in (f"-{flag}", value))
    found = replace(params, threads=threads, ngl=ngl, extra_args=(*extra, *params.extra_args))
    return found, " ".join(tuning.bench_args) or "defaults"
