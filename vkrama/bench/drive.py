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
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vkrama.bench import arrivals, latency, load, slo
from vkrama.bench.prompts import Prompt
from vkrama.results.levels import LevelStats

if TYPE_CHECKING:
    from vkrama.engine import Engine


class LevelRunner:
    """Measures one level at a time against one running server, warm-up included.
    (Not "Driver": that word names a Vulkan driver everywhere else.)"""

    def __init__(
        self,
        engine: Engine,
        container: str,
        loop: load.EventLoop,
        target: load.Target,
        prompt: Prompt,
        gen_tokens: int,
        slots: int,
        objectives: tuple[slo.Objective, ...] = (),
    ) -> None:
        self.engine, self.container, self.loop = engine, container, loop
        self.target, self.prompt, self.gen_tokens = target, prompt, gen_tokens
        self.slots, self.objectives = slots, objectives
        self.cost: float | None = None  # the generator's CPU seconds per request
        self.sent = 0
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

    def measure(self, level: load.Level, cache: bool | None = None) -> LevelStats:
        if level.pace is None or cache:
            self.warm(level.concurrency or self.slots, cache)
        elif not self.open_warmed:  # open loop: once, at every slot
            self.warm(self.slots, cache)
            self.open_warmed = True
        if level.pace is not None:
            arrivals.check_rate(level.pace.rate, self.cost or 0.0)
        before = self.engine.cpu_seconds(self.container)
        sent = load.run_level(self.loop, self.target, self.bodies(cache), level)
        server_cpu = self.engine.cpu_seconds(self.container) - before
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
        return replace(stats, slo_met=not why, slo_broken=tuple(why))
