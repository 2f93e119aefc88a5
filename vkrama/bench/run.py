"""Running bench cells: one after another, each to its end, its output judged.

Stage: engine.run(spec) ─► parse llama-bench JSON + ggml stderr ─► `CellResult`. Never two
cells at once (they would share and disturb one GPU). A failing or timed-out cell does not
stop the others; Ctrl-C stops and removes the running container and ends the run with the
cells finished so far. Must not print: each cell's start and end go to a `Reporter`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from vkrama.backends import SYCL_CPU_NOTE, is_test_device
from vkrama.bench import energy, measurements, powerwatch, split, stderr
from vkrama.bench.hostload import LoadWatch
from vkrama.bench.plan import BenchCell
from vkrama.engine import signals
from vkrama.errors import VkramaError
from vkrama.progress import NULL, Reporter, Step
from vkrama.results.records import CellResult, CellStatus

if TYPE_CHECKING:
    from vkrama.engine import Engine
    from vkrama.hardware.power import PowerCounters

STDERR_KEPT = 4000  # characters of a cell's stderr kept for the results store
# Why a split cell has no output check: the check compares one stack's llama-server with
# the CPU's on this host; a split's answer passes through several stacks at once.
NOT_CHECKED_SPLIT = (
    "output not checked: `vkrama check` compares one stack against the CPU, not a split "
    "over RPC (each worker's stack is checked when benched as a local cell)"
)
Runner = Callable[["Engine", BenchCell], CellResult]


def run_cells(
    engine: Engine,
    cells: Sequence[BenchCell],
    *,
    timeout: float,
    images: dict[str, tuple[str, dict[str, str]]] | None = None,
    flash_attn_varied: bool = False,
    on_progress: Reporter = NULL,
    on_result: Callable[[CellResult], None] | None = None,
    runner: Runner | None = None,
    power: PowerCounters | None = None,
) -> tuple[list[CellResult], bool]:
    """Run every cell in order; (results of the cells that ended, interrupted?).

    `images` maps an image reference to (image id, provenance) for the records.
    `on_result` is called as soon as each cell ends, so a caller can store it at once.
    `runner` runs one cell (default: llama-bench to completion; the serving bench passes
    its own); this loop owns the order, the Ctrl-C handling and the container sweep.
    `power`: the host's counters, to measure each llama-bench test's energy (None: not
    measured, as in tune's trials).
    """
    results: list[CellResult] = []
    floors: dict[str, float] = {}  # each device's lowest settled idle draw (bench.energy)
    doing = "running llama-bench in" if runner is None else "serving from"
    for number, cell in enumerate(cells, 1):
        counted = f"[{number}/{len(cells)}] {cell.key}"
        on_progress(Step(f"{counted}: {doing} {cell.image}"))
        image_id, provenance = (images or {}).get(cell.image, ("", {}))
        interrupted = False
        started = time.monotonic()
        try:
            if runner is not None:
                result = runner(engine, cell)
            else:
                result = run_cell(
                    engine,
                    cell,
                    timeout=timeout,
                    flash_attn_varied=flash_attn_varied,
                    power=power,
                    floors=floors,
                )
        except KeyboardInterrupt:
            interrupted = True
            result = cell.failed(
                "interrupted (Ctrl-C)", CellStatus.INTERRUPTED, time.monotonic() - started
            )
        finally:
            # Whatever happened (timeout, engine error, Ctrl-C while creating), no container
            # of this cell may outlive it: an interrupt waits until the sweep is done (a
            # second Ctrl-C after the first is dropped: the run is stopping already).
            with signals.held(deliver=not interrupted):
                _sweep(engine, cell)
        result = _with_image(result, image_id, provenance)
        results.append(result)
        if on_result:
            on_result(result)
        text = "ok" if result.ok else f"{result.status}: {result.reason}"
        on_progress(Step(f"{counted}: {text} ({result.duration_s:.1f} s)"))
        if interrupted:
            return results, True
    return results, False


def run_cell(
    engine: Engine,
    cell: BenchCell,
    *,
    timeout: float,
    flash_attn_varied: bool = False,
    power: PowerCounters | None = None,
    floors: dict[str, float] | None = None,
) -> CellResult:
    """One cell to its end; a failure is a failed CellResult, never an exception.

    The host's load is recorded around it (see `bench.hostload`), whatever the outcome, and
    with `power` each test's energy (see `bench.powerwatch`, `bench.energy`): the idle
    draw is read first.
    """
    counters, no_counter = power.for_cell(cell.gpus) if power is not None else ((), "")
    meter = powerwatch.PowerWatch(counters, floors=floors) if counters else None
    stamped: list[tuple[float, str]] = []
    if meter is not None:
        meter.idle()
        meter.start()
    watch = LoadWatch()
    watch.start()
    started = time.monotonic()
    error: VkramaError | None = None
    try:
        completed = engine.run_to_completion(
            cell.spec,
            timeout,
            on_running=watch.watch,
            # each stdout line's arrival: when llama-bench ended each test (bench.energy)
            on_stdout=(lambda line: stamped.append((time.time(), line))) if meter else None,
        )
    except VkramaError as failure:
        error = failure
    finally:
        load = watch.finish()  # stops the sampling thread on every way out, Ctrl-C included
        trace = meter.finish() if meter is not None else None
    if error is not None:
        failed = cell.failed(error.message, duration_s=time.monotonic() - started)
        return replace(failed, host_load=load)
    result = judge(
        cell,
        completed.exit_code,
        completed.stdout,
        completed.stderr,
        flash_attn_varied=flash_attn_varied,
        duration_s=time.monotonic() - started,
    )
    result = replace(result, host_load=load)
    if cell.rpc:
        result = split.lost(cell, result)
    if power is None or not result.ok:
        return result
    if trace is None:
        found = [energy.no_counter(no_counter)] * len(result.measurements)
    else:
        found = energy.per_test(trace, energy.windows(result.raw_json, stamped, cell.cold_reps))
    return replace(
        result,
        measurements=tuple(
            replace(m, energy=e) for m, e in zip(result.measurements, found, strict=True)
        ),
    )


def judge(
    cell: BenchCell,
    exit_code: int,
    stdout: str,
    stderr_text: str,
    *,
    flash_attn_varied: bool = False,
    duration_s: float = 0.0,
) -> CellResult:
    """Accept a cell's numbers only if llama-bench succeeded on what the cell asked for."""
    base = replace(cell.failed(duration_s=duration_s), stderr_tail=stderr_text[-STDERR_KEPT:])
    if exit_code != 0:
        why = f"llama-bench exited with {exit_code}: {_last_line(stderr_text)}"
        return replace(base, reason=why)
    try:
        found, raw = measurements.parse(stdout, flash_attn_varied, cell.cold_reps)
    except ValueError as error:
        return replace(base, reason=str(error))
    if cell.rpc:
        device = None
        reason = stderr.verify_rpc([m.backends for m in found], [m.gpu_info for m in found],
                                   [w.address for w in cell.rpc])  # fmt: skip
    else:
        reason, device = stderr.verify(
            cell.backend,
            cell.driver,
            stderr.observe(stderr_text),
            [m.backends for m in found],
            [m.gpu_info for m in found],
            gpu_count=max(len(cell.gpus), 1),
        )
    label = device.label if device is not None else cell.device
    if reason is not None:
        # The numbers are kept in raw_json for the record, never as measurements.
        return replace(base, device=label, reason=reason, raw_json=raw)
    # The SYCL CPU device's numbers are a test of the path, with flash attention off: the
    # row says so.
    note = SYCL_CPU_NOTE if is_test_device(cell.backend, cell.driver) else ""
    if cell.rpc:
        note = NOT_CHECKED_SPLIT
    return replace(
        base,
        device=label,
        status=CellStatus.OK,
        reason=note,
        measurements=tuple(found),
        raw_json=raw,
    )


def _with_image(result: CellResult, image_id: str, provenance: dict[str, str]) -> CellResult:
    return replace(result, image_id=image_id, provenance=dict(provenance))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"


def _sweep(engine: Engine, cell: BenchCell) -> None:
    """Remove every container carrying this cell's labels (there should be none left)."""
    token = cell.labels.get("vkrama.bench-run")
    if not token:
        return
    with contextlib.suppress(VkramaError):
        for container in engine.containers({"vkrama.bench-run": token}):
            if container.name == cell.spec.name:
                engine.remove(container.id)
