"""Measuring one level of a serving cell: warm-up, the level itself, the CPU both sides
spent, and the verdict against the SLO.

Stage: bench (serving), between `serving` (which owns the cell and its container) and
`load` (which sends). Makes each request's body: with a shared prefix (`--prefix-tokens`)
every request gets its own number before the same user text, so that only the shared system
prompt can come from the server's prompt cache, never a whole earlier prompt. Must not
print or start containers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from vkrama.bench import arrivals, latency, load, slo
from vkrama.bench.prompts import Prompt
from vkrama.results.levels import LevelStats


class LevelRunner:
    """Measures one level at a time against one running server, warm-up included.
    (Not "Driver": that word names a Vulkan driver everywhere else.)"""

    def __init__(
        self,
        server_cpu: Callable[[], float] | None,
        loop: load.EventLoop,
        target: load.Target,
        prompt: Prompt,
        gen_tokens: int,
        slots: int,
        objectives: tuple[slo.Objective, ...] = (),
    ) -> None:
        # The server's CPU seconds so far (its container's), None for a server found at a
        # URL, whose CPU is not ours to read.
        self.server_cpu, self.loop = server_cpu, loop
        self.target, self.prompt, self.gen_tokens = target, prompt, gen_tokens
        self.slots, self.objectives = slots, objectives
        self.cost: float | None = None  # the generator's CPU seconds per request
        self.sent = 0
        self.windows: list[tuple[float, float]] = []  # each measured level, warm-ups not
        self.open_warmed = False

    def bodies(self, cache: bool | None) -> Callable[[], dict[str, Any]]:
        def next_body() -> dict[str, Any]:
            self.sent += 1
            text = self.prompt.text
            if self.prompt.prefix:
                text = f"{self.sent}. {text}"
            return load.request_body(self.target, text, self.gen_tokens,
                                     system=self.prompt.system, cache=bool(cache))  # fmt: skip

        return next_body

    def warm(self, clients: int, cache: bool | None) -> None:
        # A warm-up round, not counted: each new batch size makes Vulkan compile pipelines
        # (lavapipe: for many seconds on the CPU), and those compiles landed inside the
        # first measured requests, between a slot's first token and its stream: client and
        # server disagreed on its decode. With the prompt cache on, it also fills the
        # slots with the shared prefix, as a server that has been running would have them.
        level = load.Level(clients, None, clients)
        sent = load.run_level(self.loop, self.target, self.bodies(cache), level)
        self.cost = sent.client_cpu_s / max(len(sent.traces), 1)

    def check_rates(self, rates: Sequence[float]) -> None:
        """Refuse, before any level is measured, a rate the generator cannot send: its cost
        per request is measured on the open loop's warm-up round (at every slot)."""
        if all(math.isinf(rate) for rate in rates):
            return
        if not self.open_warmed:
            self.warm(self.slots, None)
            self.open_warmed = True
        for rate in rates:
            arrivals.check_rate(rate, self.cost or 0.0)

    def measure(self, level: load.Level, cache: bool | None = None) -> LevelStats:
        if level.pace is None or cache:
            self.warm(level.concurrency or self.slots, cache)
        elif not self.open_warmed:  # open loop: once, at every slot
            self.warm(self.slots, cache)
            self.open_warmed = True
        # Rates asked for are checked before any level (`check_rates`), a sweep's before
        # each of its own (`serving._sweep`): a warm-up here must not refuse one mid-run.
        before = self.server_cpu() if self.server_cpu else 0.0
        began = time.time()
        sent = load.run_level(self.loop, self.target, self.bodies(cache), level)
        self.windows.append((began, time.time()))  # wall clock: bench.energy cuts its trace
        server_cpu = self.server_cpu() - before if self.server_cpu else None
        if len(sent.traces) > 1:  # more requests than a warm-up: the better estimate
            self.cost = sent.client_cpu_s / len(sent.traces)
        pace = level.pace
        stats = latency.summarize(
            sent.traces,
            level.concurrency,
            sent.wall_s,
            sent.client_cpu_s,
            server_cpu,
            rate=None if pace is None or math.isinf(pace.rate) else pace.rate,
            arrival=None if pace is None else pace.pattern,
            lags=sent.lags,
            realized_rate=sent.realized_rate,
            prompt_cache=cache,
        )
        if not self.objectives:
            return stats
        why = slo.broken(stats, self.objectives)
        good = sum(1 for trace in sent.traces if slo.good(trace, self.objectives))
        goodput = good / sent.wall_s if sent.wall_s > 0 else 0.0
        return replace(stats, slo_met=not why, slo_broken=tuple(why), goodput=goodput,
                       good_requests=good)  # fmt: skip
