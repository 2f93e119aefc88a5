"""bench --rpc without podman: the split cell's plan, how its run is judged, how its verdict
reads, what its record keeps, and what the CLI refuses. (Real workers and a real split
bench: tests/test_rpc_e2e.py.)"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vkrama import config, results
from vkrama.bench import stderr
from vkrama.results import ranking
from vkrama.results.records import CellResult, CellStatus, Measurement, RpcWorker

Vkrama = Callable[..., Any]
CPU = RpcWorker("127.0.0.1:50052", "cpu", None, "CPU")
LAVAPIPE = RpcWorker("127.0.0.1:50053", "vulkan", "lavapipe", "llvmpipe (lavapipe)")
STRANGER = RpcWorker("10.0.0.9:50052")  # not a vkrama worker of this host


def cell(backend: str, tps: float, sd: float, driver: str | None = None,
         rpc: tuple[RpcWorker, ...] = ()) -> CellResult:  # fmt: skip
    measured = Measurement("tg128", 0, 128, tps, sd, (tps,))
    return CellResult(backend, driver, "-", CellStatus.OK, measurements=(measured,), rpc=rpc)


VERDICTS = [
    ("the-local-cpu-is-1.7x-the-split-beyond-noise",
     [cell("cpu", 170.0, 1.0), cell("rpc", 100.0, 1.0, rpc=(CPU, LAVAPIPE))],
     "tg128: cpu fastest at 170.0 ± 1.0 t/s (the only local cell); cpu local 1.70x the split "
     "over cpu@127.0.0.1:50052+vulkan/lavapipe@127.0.0.1:50053: beyond noise"),
    # The split is no runner-up among the local cells: vulkan/lavapipe is.
    ("the-split-is-set-against-the-fastest-local-cell-not-ranked-among-them",
     [cell("cpu", 300.0, 1.0), cell("vulkan", 30.0, 1.0, "lavapipe"),
      cell("rpc", 150.0, 1.0, rpc=(CPU,))],
     "tg128: cpu fastest at 300.0 ± 1.0 t/s, 10.00x vulkan/lavapipe: beyond noise; cpu local "
     "2.00x the split over cpu@127.0.0.1:50052: beyond noise"),
    ("a-faster-split-is-named-first-and-noise-is-said",
     [cell("vulkan", 100.0, 30.0, "lavapipe"), cell("rpc", 120.0, 30.0, rpc=(STRANGER,))],
     "tg128: vulkan/lavapipe fastest at 100.0 ± 30.0 t/s (the only local cell); the split "
     "over unknown@10.0.0.9:50052 1.20x vulkan/lavapipe local: within noise"),
    ("splits-alone-rank-among-themselves",
     [cell("rpc", 50.0, 1.0, rpc=(CPU,)), cell("rpc", 25.0, 1.0, rpc=(LAVAPIPE,))],
     "tg128: the split over cpu@127.0.0.1:50052 fastest at 50.0 ± 1.0 t/s, 2.00x the split "
     "over vulkan/lavapipe@127.0.0.1:50053: beyond noise"),
]  # fmt: skip


@pytest.mark.parametrize(("cells", "line"), [v[1:] for v in VERDICTS], ids=[v[0] for v in VERDICTS])
def test_the_verdict_names_what_the_split_costs(cells: list[CellResult], line: str) -> None:
    assert [v.line for v in ranking.verdicts(cells)] == [line]


VERIFY = [
    ("both-workers-listed", ["RPC"], ["127.0.0.1:50052, 127.0.0.1:50053"], None),
    ("the-cpu-ran-it-alone", ["CPU"], [""],
     "llama-bench reports backends CPU, not RPC: the split did not run"),
    ("one-worker-unused", ["RPC"], ["127.0.0.1:50052"],
     "llama-bench used no device of RPC worker 127.0.0.1:50053"),
]  # fmt: skip


@pytest.mark.parametrize(("used", "infos", "reason"), [v[1:] for v in VERIFY],
                         ids=[v[0] for v in VERIFY])  # fmt: skip
def test_a_split_cell_counts_only_when_every_worker_ran_it(
    used: list[str], infos: list[str], reason: str | None
) -> None:
    addresses = ["127.0.0.1:50052", "127.0.0.1:50053"]
    assert stderr.verify_rpc(used, infos, addresses) == reason


def test_a_split_cells_workers_are_stored_and_read_back(settings: config.Settings) -> None:
    from vkrama import __version__

    info = results.RunInfo(host="h", kernel="k", gpus=[], gpu_key="none", model_name="tiny",
                           model_sha256="0" * 64, params={},
                           vkrama_version=__version__)  # fmt: skip
    run = results.start_run(settings, info)
    split = cell("rpc", 100.0, 1.0, rpc=(CPU, LAVAPIPE, STRANGER))
    results.add_cell(settings, run, 0, split)
    results.add_cell(settings, run, 1, cell("cpu", 170.0, 1.0))
    stored = results.get_run(settings, run).cells
    assert [c.rpc for c in stored] == [(CPU, LAVAPIPE, STRANGER), ()]


def test_the_dry_run_plans_a_split_cell_on_the_hosts_network_beside_the_local_one(
    vkrama: Vkrama, tiny_model: Path
) -> None:
    workers = "127.0.0.1:50052,localhost:50053"
    done = vkrama("--dry-run", "bench", str(tiny_model), "--backend", "cpu", "--rpc", workers,
                  "-p", "16", "-n", "4", "--", "-ub", "8")  # fmt: skip
    assert done.returncode == 0, done.stderr
    local, split = [shlex.split(line) for line in done.stdout.splitlines()]
    assert local[local.index("--network") + 1] == "none"
    assert local[local.index("-ngl") + 1] == "0" and "--rpc" not in local
    # The leader reaches workers on this host's loopback: the host's network.
    assert split[split.index("--network") + 1] == "host"
    assert split[split.index("--rpc") + 1] == workers
    assert split[split.index("-ngl") + 1] == "999"  # every layer on the workers
    assert split[-4:] == ["-ub", "8", "-o", "json"]  # the user's arguments stay last
    assert "vkrama.backend=rpc" in split


BAD = ["127.0.0.1", "127.0.0.1:0", "no-such-host.invalid:50052", "127.0.0.1:50052,"]


@pytest.mark.parametrize("value", BAD, ids=["no-port", "port-0", "unresolvable-host", "empty-item"])
def test_a_bad_rpc_value_is_a_usage_error_as_on_serve(
    vkrama: Vkrama, tiny_model: Path, value: str
) -> None:
    done = vkrama("bench", str(tiny_model), "--rpc", value, "--dry-run")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("Error: --rpc") and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("flags", "said"),
    [(["--serve"], "--serve"), (["--tuned"], "--tuned"),
     (["--serve", "--url", "http://127.0.0.1:1"], "--rpc picks what vkrama starts")],
    ids=["serve", "tuned", "url"],
)  # fmt: skip
def test_rpc_with_a_flag_it_cannot_join_is_a_usage_error(
    vkrama: Vkrama, tiny_model: Path, flags: list[str], said: str
) -> None:
    done = vkrama("bench", str(tiny_model), "--rpc", "127.0.0.1:50052", *flags)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("Error: ") and said in done.stderr.splitlines()[0]


def test_a_split_cell_that_failed_names_the_workers_that_stopped_answering() -> None:
    import socket

    from vkrama.bench import split
    from vkrama.bench.plan import BenchCell
    from vkrama.engine import ContainerSpec

    with socket.socket() as alive, socket.socket() as probe:
        alive.bind(("127.0.0.1", 0))
        alive.listen()
        probe.bind(("127.0.0.1", 0))  # bound, never listening: a worker that went away
        up = f"127.0.0.1:{alive.getsockname()[1]}"
        down = f"127.0.0.1:{probe.getsockname()[1]}"
        spec = ContainerSpec(image="localhost/vkrama/cpu:latest", command=("llama-bench",))
        cell = BenchCell("rpc", None, "-", spec.image, spec, rpc=(RpcWorker(up), RpcWorker(down)))
        crashed = cell.failed("llama-bench exited with 134: libc.so.6(+0x112f98)")
        assert split.lost(cell, crashed).reason == (
            f"RPC worker {down} stopped answering during the cell (`vkrama ps`, `vkrama logs "
            "NAME`); llama-bench exited with 134: libc.so.6(+0x112f98)"
        )
        ok = replace(crashed, status=CellStatus.OK, reason="")
        assert split.lost(cell, ok) == ok  # a cell that measured is left as it is
