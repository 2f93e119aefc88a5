"""bench --rpc: one llama-bench cell split over ggml RPC workers, beside the local cells.

Stage: bench, between `session` (which asks for the cell) and `plan` (whose cell it
extends). The workers must answer before anything is read or built, and each says what it
is (`serve.rpc.describe`: a `vkrama rpc-worker` container's labels, else unknown). The
leader is llama-bench in the cpu image with every layer on the workers; its container
shares the host's network, as `serve --rpc`'s does, so that it reaches workers on this
host's loopback. Must not start containers or print.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from vkrama import stack
from vkrama.bench import plan as planning
from vkrama.llama_flags import FLAG
from vkrama.progress import NULL, Reporter, Step
from vkrama.results.records import UNKNOWN, CellResult, RpcWorker

if TYPE_CHECKING:
    from vkrama.config import Settings
    from vkrama.engine import Engine

# A split cell's row: its backend column, its name in labels and tables.
SPLIT = "rpc"


def workers(addresses: Sequence[str], engine: Engine | None) -> tuple[RpcWorker, ...]:
    """The workers of `--rpc`, each described by itself. With an engine (a real run),
    NETWORK naming every worker that does not answer; without (the --dry-run), none is
    contacted and each is unknown."""
    if not addresses:
        return ()
    from vkrama.serve import rpc

    endpoints = rpc.parse_endpoints(",".join(addresses))
    if engine is not None:
        rpc.check_reachable(endpoints)
    return rpc.describe(engine, endpoints)


def cold_reps(found: Sequence[RpcWorker]) -> int:
    """A split compiles on first use where any worker's stack does; an unknown worker may."""
    return max(
        (planning.COLD_FIRST.get(w.backend, 1 if w.backend == UNKNOWN else 0) for w in found),
        default=0,
    )


def cells(
    settings: Settings,
    supply: stack.Supply,
    resolution: stack.Resolution,
    slot_of: Callable[[stack.Stack], planning.Slot],
    params: planning.BenchParams,
    found: tuple[RpcWorker, ...],
    threads: int,
    on_progress: Reporter = NULL,
) -> list[planning.BenchCell]:
    """The split cell (none without workers), its leader the local cpu cell's stack (or
    the cpu image resolved here when the local cells are other backends)."""
    if not found:
        return []
    from vkrama import backends
    from vkrama.serve import rpc

    leader = next((s for s in resolution.stacks if s.choice.backend == "cpu"), None)
    if leader is None:
        choice = backends.choose(resolution.profile, "cpu")
        image = supply.image(settings, choice, resolution.images, on_progress)
        leader = stack.Stack(choice, image, None)
    if supply.live:  # the leader's llama-bench loads ggml's RPC module from its image
        rpc.require_module("cpu", resolution.images.get(leader.image, ("", {}))[1])
    model = resolution.model
    cell = plan_cell(slot_of(leader), model.files, model.name, params, found, threads=threads)
    on_progress(Step(f"cell {cell.key}: every layer on {len(found)} RPC workers: {cell.device}"))
    return [cell]


def plan_cell(
    slot: planning.Slot,
    model_files: Sequence[Path],
    model_name: str,
    params: planning.BenchParams,
    found: tuple[RpcWorker, ...],
    *,
    threads: int,
) -> planning.BenchCell:
    """llama-bench in the leader's image (`slot`) with `--rpc` and every layer on the
    workers: the local cell's container with the host's network. Pure."""
    local = planning.plan_cell(slot, model_files, model_name, params, threads=threads)
    cold = cold_reps(found)
    addresses = ",".join(w.address for w in found)
    argv = planning.llama_bench_args(params, model_files[0].name, SPLIT, threads, cold=cold)
    # --rpc before the user's own arguments and `-o json`, which stay last.
    at = len(argv) - 2 - len(params.extra_args)
    command = (*argv[:at], FLAG["rpc"].bench, addresses, *argv[at:])
    device = " + ".join(w.label for w in found)
    labels = {**local.spec.labels, "vkrama.backend": SPLIT, "vkrama.device": device,
              "vkrama.driver": "", "vkrama.rpc": addresses}  # fmt: skip
    spec = replace(local.spec, command=command, name=f"{slot.name('bench')}-{SPLIT}",
                   labels=labels, network="host")  # fmt: skip
    return replace(local, backend=SPLIT, driver=None, device=device, spec=spec, labels=labels,
                   gpu_index=None, gpus=(), cold_reps=cold, rpc=found)  # fmt: skip


def lost(cell: planning.BenchCell, result: CellResult) -> CellResult:
    """A split cell that failed while a worker went away (ggml's RPC client aborts
    llama-bench: "Remote RPC server crashed"): the reason names the workers that no longer
    answer, which llama-bench's own last line does not."""
    from vkrama.serve import rpc

    gone = [w.address for w in cell.rpc if not rpc.answers(rpc.parse_endpoint(w.address))]
    if result.ok or not gone:
        return result
    which = f"RPC worker{'s' if len(gone) > 1 else ''} {', '.join(gone)}"
    why = f"{which} stopped answering during the cell (`vkrama ps`, `vkrama logs NAME`)"
    return replace(result, reason=f"{why}; {result.reason}")
