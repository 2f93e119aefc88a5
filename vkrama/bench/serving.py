"""The serving benchmark's cells: llama-server started as `vkrama serve` starts it, under load.

Stage: bench (serving). `plan_serve_cell` is pure (Choice + image + model ─► the same
ContainerSpec `serve.plan` makes, with the bench's labels), so `--dry-run` prints it;
`run_serve_cell` starts it, waits until ready, checks from ggml's log what ran, builds the
prompt, measures each level (clients or a request rate; `drive`), then, under `--sweep`,
raises the rate as `slo.next_rate` says. Never two
cells at once; the container is removed by `run.run_cells`, whatever happens. Must not
print: each level's summary goes to a `Reporter`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vkrama.bench import arrivals, latency, load, prompts, slo, stderr
from vkrama.bench.arrivals import Pace
from vkrama.bench.drive import LevelRunner
from vkrama.bench.plan import BenchCell, Slot
from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import NULL, Reporter, Step
from vkrama.results.levels import LevelStats, capacity, judged
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
DEFAULT_SLOTS = 4  # llama-server slots for open-loop levels alone, without --parallel


@dataclass(frozen=True)
class ServeParams:
    """What every serving cell of one run measures; identical across cells by construction."""

    concurrency: tuple[int, ...] = (1, 4)
    prompt_tokens: int = 128
    gen_tokens: int = 64
    requests: int | None = None  # per level; None: `default_requests` (or --duration)
    rates: tuple[float, ...] = ()  # open-loop levels, requests/s (inf: a burst)
    arrival: str = "poisson"
    duration: float | None = None  # seconds per level, instead of a request count
    parallel: int | None = None  # llama-server slots; None: the largest level's clients
    slo: tuple[slo.Objective, ...] = ()
    sweep: bool = False  # raise the rate from rates[0] (or 1/s) until the SLO breaks
    prefix_tokens: int = 0  # a system prompt every request shares; cache off and on
    prompt_source: str = "text"  # the bundled public-domain text, or "random" words
    url: str | None = None  # measure the server already running there (no cell of ours)

    @property
    def slots(self) -> int:
        """llama-server's --parallel: one slot per client of the largest level."""
        return self.parallel or max(self.concurrency, default=DEFAULT_SLOTS)

    @property
    def ctx_size(self) -> int:
        return self.slots * (self.prompt_tokens + self.gen_tokens + CTX_MARGIN)

    def level(self, concurrency: int = 0, rate: float | None = None) -> load.Level:
        pace = None if rate is None else Pace(rate, self.arrival)
        level = load.Level(concurrency, pace, self.requests, self.duration)
        if self.requests is None and self.duration is None:
            level = replace(level, requests=default_requests(level, self.slots))
        return level

    def levels(self) -> list[load.Level]:
        """The levels measured as asked; a sweep's own rates come one by one after them."""
        closed = [self.level(c) for c in self.concurrency]
        return closed + [self.level(rate=r) for r in self.rates]

    def as_dict(self) -> dict[str, object]:
        found: dict[str, object] = {
            "mode": "serve",
            "concurrency": list(self.concurrency),
            "prompt_tokens": self.prompt_tokens,
            "gen_tokens": self.gen_tokens,
            "prompt_source": self.prompt_source,
            "requests": [level.requests for level in self.levels()],
        }
        if self.url is None:  # a server of ours: the slots and context we gave it
            found.update(parallel=self.slots, ctx_size=self.ctx_size)
        else:
            found["url"] = self.url
        if self.rates or self.sweep:
            found["request_rate"] = [str(r) for r in self.rates]  # "inf" stays valid JSON
            found["arrival"] = self.arrival
        if self.duration is not None:
            found["duration_s"] = self.duration
        if self.slo:
            found["slo"] = ",".join(str(o) for o in self.slo)
        if self.sweep:
            found["sweep"] = True
        if self.prefix_tokens:
            found["prefix_tokens"] = self.prefix_tokens
        return found


# A level's fewest requests by default: of 16, a p90 lies between the 14th and 15th
# slowest, not at the slowest (of 8 it leant on the slowest); a p99 is near it whatever.
MIN_REQUESTS = 16


def default_requests(level: load.Level, slots: int) -> int:
    """Requests of a level given neither --requests nor --duration: 4 per client (a burst:
    per slot) or 4 seconds' worth at its rate, at least MIN_REQUESTS."""
    if level.pace is None:
        return max(MIN_REQUESTS, 4 * level.concurrency)
    if math.isinf(level.pace.rate):
        return max(MIN_REQUESTS, 4 * slots)
    return max(MIN_REQUESTS, math.ceil(4 * level.pace.rate))


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
    spans: list[tuple[float, float]] | None = None,
) -> CellResult:
    """One serving cell to its end; a failure is a failed CellResult, never an exception.

    `timeout` bounds the wait until the server is ready; each request has its own. `spans`
    gets each measured level's wall-clock span (bench.energy cuts its draw from them)."""
    from vkrama.serve import ready

    started = time.monotonic()
    base = cell.failed()
    url, alias = cell.spec.labels["vkrama.url"], cell.spec.labels["vkrama.alias"]
    levels: list[LevelStats] = []
    fixed = 0
    log = ""
    try:
        container = engine.run(cell.spec)
        ready.wait_ready(url, alias, timeout, is_running=lambda: engine.alive(container))
        log = "\n".join(engine.logs(container, stdout=False))
        reason, seen = stderr.verify(cell.backend, cell.driver, stderr.observe(log), [])
        device = seen.label if seen is not None else cell.device
        base = replace(base, device=device)
        if reason is not None:
            return _ended(base, started, log, reason=reason)
        target = load.Target(url, alias, timeout=max(timeout, 60.0))
        prompt = prompts.build(url, target.headers, params.prompt_tokens, params.prefix_tokens,
                               params.prompt_source)  # fmt: skip
        on_progress(Step(f"  {cell.key}: {prompt.describe()}"))
        with load.EventLoop() as loop:
            runner = LevelRunner(lambda: engine.cpu_seconds(container), loop, target, prompt,
                                 params.gen_tokens, params.slots, params.slo)  # fmt: skip
            runner.windows = spans if spans is not None else runner.windows
            fixed = measure_levels(runner, params, cell.key, on_progress, levels)
    except arrivals.CannotSend:
        raise  # the whole run's usage error, not this cell's failure
    except VkramaError as error:
        if not log:
            # The server's last words say why it never became ready.
            log = "\n".join(_tail(engine, cell))
        why = error.message
        if error.status == ExitStatus.USAGE and error.hint:
            why += f" ({error.hint})"  # what the user can change: the cell says it too
        return _ended(base, started, log, levels, reason=why)
    why = failed_levels(levels, fixed)
    if why:
        return _ended(base, started, log, levels, reason=why)
    return _ended(base, started, log, levels, status=CellStatus.OK)


def measure_levels(
    runner: LevelRunner,
    params: ServeParams,
    key: str,
    on_progress: Reporter,
    levels: list[LevelStats],
) -> int:
    """Every level of `params` against the server `runner` drives, then the sweep's,
    appended to `levels` one by one (kept if a later one fails); returns how many of them
    a failed request fails the cell for (a sweep's levels only break the SLO)."""
    runner.check_rates(params.rates)
    # A shared prefix is measured with the server's prompt cache off, then on.
    caches = (False, True) if params.prefix_tokens else (None,)
    for level in params.levels():
        for cache in caches:
            levels.append(runner.measure(level, cache))
            on_progress(Step(f"  {key} {_named(level, cache)}: {latency.brief(levels[-1])}"))
    # Under --sweep the rate levels are its first steps: their failures break the SLO.
    fixed = len(levels) if not params.sweep else len(params.concurrency) * len(caches)
    if params.sweep:
        _sweep(runner, params, levels, key, on_progress)
    return fixed


def failed_levels(levels: list[LevelStats], fixed: int) -> str:
    """Why the cell failed: the first of its first `fixed` levels with a failed request
    ("" if none did). A sweep drives the server past what it serves: failures there break
    the SLO, not the cell."""
    failed = [s for s in levels[:fixed] if s.failures]
    if not failed:
        return ""
    first = failed[0]
    return (f"{first.failures} of {first.requests} requests failed at {first.load}: "
            f"{first.errors[0] if first.errors else '?'}")  # fmt: skip


def _sweep(
    runner: LevelRunner,
    params: ServeParams,
    measured: list[LevelStats],
    key: str,
    on_progress: Reporter,
) -> None:
    """The sweep's own levels, appended to `measured` one by one (kept if a later one
    fails), whose rate levels are its first steps: one rate after another as
    `slo.next_rate` says, then the capacity line. With a shared prefix the sweep measures
    the server with its prompt cache on, as it would serve (`levels.judged`)."""
    start = params.rates[0] if params.rates else slo.SWEEP_START
    cache = True if params.prefix_tokens else None
    tried = judged(measured)
    while (rate := slo.next_rate(tried, start)) is not None:
        if runner.cost is not None and not arrivals.can_send(rate, runner.cost):
            # Past what this machine's generator sends on time: the sweep ends here and its
            # levels so far stand (a --request-rate asked for outright is refused instead).
            on_progress(Step(f"  {key} sweep stops before {rate:.3g}/s: more than the load "
                             "generator sends on time here"))  # fmt: skip
            break
        measured.append(runner.measure(params.level(rate=rate), cache))
        tried.append((rate, bool(measured[-1].slo_met)))
        on_progress(Step(f"  {key} sweep {measured[-1].load}: {latency.brief(measured[-1])}"))
    best = capacity(tried)
    said = "none" if best is None else best.said()
    on_progress(Step(f"  {key}: capacity {said} within {params.as_dict()['slo']}"))


def _named(level: load.Level, cache: bool | None) -> str:
    return level.label() + ("" if cache is None else f", cache {'on' if cache else 'off'}")


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
