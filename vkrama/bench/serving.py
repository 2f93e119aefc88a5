"""The serving benchmark's cells: llama-server started as `vkrama serve` starts it, under load.

Stage: bench (serving). `plan_serve_cell` is pure (Choice + image + model ─► the same
ContainerSpec `serve.plan` makes, with the bench's labels), so `--dry-run` prints it;
`run_serve_cell` starts it, waits until ready, checks from ggml's log what ran, builds the
prompt, drives each concurrency level with `load` and summarizes with `latency`. Never two
cells at once; the container is removed by `run.run_cells`, whatever happens. Must not
print: each level's summary goes to a `Reporter`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vkrama.bench import latency, load, prompts, stderr
from vkrama.bench.plan import BenchCell, Slot
from vkrama.errors import VkramaError
from vkrama.progress import NULL, Reporter, Step
from vkrama.results.levels import LevelStats
from vkrama.results.records import CellResult, CellStatus

if TYPE_CHECKING:
    from vkrama.engine import Engine
    from vkrama.store import LocalModel

# Room per slot beyond prompt + output: the template's own tokens may round up a little.
CTX_MARGIN = 32
# The one difference from `vkrama serve`: log verbosity 4, the level at which llama-server
# lets ggml name the devices it loads onto (`ggml_vulkan: 0 = …`, `Device 0: …`), which is
# how a cell proves its backend really ran. It adds ~30 log lines per request, none per token.
VERBOSE_ARGS = ("-lv", "4")
LOG_KEPT = 4000


@dataclass(frozen=True)
class ServeParams:
    """What every serving cell of one run measures; identical across cells by construction."""

    concurrency: tuple[int, ...] = (1, 4)
    prompt_tokens: int = 128
    gen_tokens: int = 64
    requests: int | None = None  # per level; None: max(8, 4 x concurrency)

    @property
    def slots(self) -> int:
        """llama-server's --parallel: one slot per client of the largest level."""
        return max(self.concurrency)

    @property
    def ctx_size(self) -> int:
        return self.slots * (self.prompt_tokens + self.gen_tokens + CTX_MARGIN)

    def levels(self) -> list[tuple[int, int]]:
        return load.level_sizes(self.concurrency, self.requests)

    def as_dict(self) -> dict[str, object]:
        return {
            "mode": "serve",
            "concurrency": list(self.concurrency),
            "prompt_tokens": self.prompt_tokens,
            "gen_tokens": self.gen_tokens,
            "requests": [k for _, k in self.levels()],
            "parallel": self.slots,
            "ctx_size": self.ctx_size,
        }


def plan_serve_cell(slot: Slot, model: LocalModel, params: ServeParams, *, port: int) -> BenchCell:
    """The container `vkrama serve --parallel SLOTS --ctx-size N` would start, renamed and
    labelled as this bench run's cell (so `vkrama ps/stop` leave it to the bench)."""
    from vkrama.serve import plan as serving

    spec = serving.plan(
        serving.ServeRequest(
            model=str(model.path),
            ctx_size=params.ctx_size,
            parallel=params.slots,
            extra_args=VERBOSE_ARGS,
        ),
        serving.Resolved(model, slot.choice, slot.image, port, compile_cache=slot.compile_cache),
    )
    labels = {
        **spec.labels,
        "vkrama.role": "bench",
        "vkrama.bench-run": slot.run_token,
        "vkrama.driver": slot.choice.driver or "",
    }
    spec = replace(spec, name=slot.name("serve"), labels=labels, env=slot.env(spec.env))
    return BenchCell.of(slot.choice, slot.image, spec)


def run_serve_cell(
    engine: Engine,
    cell: BenchCell,
    params: ServeParams,
    *,
    timeout: float,
    on_progress: Reporter = NULL,
) -> CellResult:
    """One serving cell to its end; a failure is a failed CellResult, never an exception.

    `timeout` bounds the wait until the server is ready; each request has its own."""
    from vkrama.serve import containers, ready

    started = time.monotonic()
    base = cell.failed()
    url, alias = cell.spec.labels["vkrama.url"], cell.spec.labels["vkrama.alias"]
    levels: list[LevelStats] = []
    log = ""
    try:
        container = engine.run(cell.spec)
        ready.wait_ready(
            url, alias, timeout, is_running=lambda: containers.is_running(engine, container)
        )
        log = "\n".join(engine.logs(container, stdout=False))
        reason, seen = stderr.verify(cell.backend, cell.driver, stderr.observe(log), [])
        device = seen.label if seen is not None else cell.device
        base = replace(base, device=device)
        if reason is not None:
            return _ended(base, started, log, reason=reason)
        target = load.Target(url, alias, timeout=max(timeout, 60.0))
        prompt = prompts.build(url, target.headers, params.prompt_tokens)
        on_progress(Step(f"  {cell.key}: {prompt.describe()}"))
        body = load.request_body(target, prompt.text, params.gen_tokens)
        with load.EventLoop() as loop:
            for concurrency, requests in params.levels():
                # A warm-up round per level, not counted: each new batch size makes Vulkan
                # compile pipelines (lavapipe: for many seconds on the CPU), and those
                # compiles landed inside the first measured requests, between a slot's
                # first token and its stream: client and server disagreed on its decode.
                load.run_level(loop, target, body, concurrency, concurrency)
                before = engine.cpu_seconds(container)
                traces, wall, client_cpu = load.run_level(loop, target, body, concurrency,
                                                          requests)  # fmt: skip
                server_cpu = engine.cpu_seconds(container) - before
                stats = latency.summarize(traces, concurrency, wall, client_cpu, server_cpu)
                levels.append(stats)
                brief = latency.brief(stats)
                on_progress(Step(f"  {cell.key} concurrency {stats.concurrency}: {brief}"))
    except VkramaError as error:
        if not log:
            # The server's last words say why it never became ready.
            log = "\n".join(_tail(engine, cell))
        return _ended(base, started, log, levels, reason=error.message)
    failed = [s for s in levels if s.failures]
    if failed:
        first = failed[0]
        why = (f"{first.failures} of {first.requests} requests failed at concurrency "
               f"{first.concurrency}: {first.errors[0] if first.errors else '?'}")  # fmt: skip
        return _ended(base, started, log, levels, reason=why)
    return _ended(base, started, log, levels, status=CellStatus.OK)


def _ended(
    base: CellResult,
    started: float,
    log: str,
    levels: list[LevelStats] | None = None,
    *,
    status: CellStatus = CellStatus.FAILED,
    reason: str = "",
) -> CellResult:
    return replace(
        base,
        status=status,
        reason=reason,
        serving=tuple(levels or ()),
        stderr_tail=log[-LOG_KEPT:],
        duration_s=round(time.monotonic() - started, 3),
    )


def _tail(engine: Engine, cell: BenchCell) -> list[str]:
    from vkrama.serve import containers

    for found in engine.containers({"vkrama.bench-run": cell.labels["vkrama.bench-run"]}):
        if found.name == cell.spec.name:
            return containers.log_tail(engine, found.id, 20)
    return []
