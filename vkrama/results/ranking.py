"""Reading stored runs against each other: compare two runs, pick the best cell, say
which cell wins each test.

Stage: results DB ─► comparisons for `results compare`, the pick for
`serve --backend best` and the verdict lines of a run (`verdicts`, the one place that
decides "fastest, by what ratio, beyond noise or not", and whether the cells compared ran
one llama.cpp build). Pure over the store's records; must not print.
Over 300 lines because compare, best and the verdicts share one noise rule, one naming of
cells and one build check, and each must judge the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vkrama import backends
from vkrama.config import Settings
from vkrama.errors import ExitStatus, VkramaError
from vkrama.results import db
from vkrama.results.levels import capacity, judged
from vkrama.results.records import (
    CellResult,
    CellStatus,
    Measurement,
    OutputCheck,
    split_name,
)

# A change counts as more than noise when it exceeds this many combined standard
# deviations (sqrt(sd_a² + sd_b²)); 2 keeps identical reruns quiet ~95% of the time.
NOISE_SIGMAS = 2.0
METRICS = ("tg", "pp")
# A serving bench's ranking metric: total output tokens/s at N concurrent clients.
SERVE_METRIC = re.compile(r"serve:tps@(\d+)")
# A stack's capacity: the highest request rate whose level met `bench --serve --slo` (a
# --sweep's result; `levels.capacity`). `--rank-by capacity`, or `goodput` as it was named
# before goodput meant what vLLM means (a level's requests/s within every target).
CAPACITY = "serve:capacity"
# The least energy per generated token: J/token above the idle draw of tg rows, among stacks
# whose output check said ok (a frugal wrong answer is no answer).
JOULES = "joules"
OK_OUTPUT = "ok"  # the check's verdict it needs (bench.divergence.VERDICTS names all three)


@dataclass(frozen=True)
class Change:
    """One (cell, test) present in run A and/or run B."""

    backend: str
    driver: str | None
    device: str
    test: str
    tps_a: float | None
    tps_b: float | None
    stddev_a: float | None
    stddev_b: float | None
    change_pct: float | None  # (b - a) / a * 100
    noise_pct: float | None  # NOISE_SIGMAS combined stddevs, in % of a
    significant: bool
    status_a: CellStatus | None = None  # None: no such cell in A
    status_b: CellStatus | None = None

    @property
    def verdict(self) -> str:
        if self.change_pct is None:
            for run, status in (("A", self.status_a), ("B", self.status_b)):
                if status is None:
                    return f"only in {'B' if run == 'A' else 'A'}"
                if status != CellStatus.OK:
                    return f"{status} in {run}"
            return "-"
        if not self.significant:
            return "within noise"
        return "faster" if self.change_pct > 0 else "slower"

    def json_fields(self) -> dict[str, object]:
        """What `results compare --json` adds to the fields (cli.console.to_json)."""
        return {"verdict": self.verdict}


@dataclass(frozen=True)
class BestCell:
    """The stored cell `serve --backend best` should use, and why."""

    run_id: int
    started: str
    backend: str
    driver: str | None
    device: str
    test: str
    tps: float
    tps_stddev: float
    image_id: str
    reason: str  # one line naming the run and the runner-up


@dataclass(frozen=True)
class Verdict:
    """Which cell is fastest at one test of one run, and by how much over the runner-up."""

    test: str
    winner: str  # "vulkan/radv", "cpu"
    device: str
    tps: float
    tps_stddev: float
    runner_up: str | None  # None: only one cell measured this test
    runner_up_tps: float | None
    runner_up_stddev: float | None
    ratio: float | None  # winner / runner-up
    significant: bool  # the gap exceeds NOISE_SIGMAS combined stddevs
    builds: str = ""  # set when winner and runner-up ran different llama.cpp builds
    energy: str = ""  # "; J/token above idle: cuda 0.84, vulkan/nvidia 0.71" where measured
    # bench --rpc: what each split costs against the fastest local cell ("; cpu local 1.70x
    # the split over cpu@127.0.0.1:50052+vulkan/lavapipe@127.0.0.1:50053: beyond noise").
    split: str = ""

    @property
    def line(self) -> str:
        """ "tg16: cpu fastest at 2922.2 ± 1620.0 t/s, 1.52x vulkan/lavapipe: within noise"."""
        head = f"{self.test}: {self.winner} fastest at {self.tps:.1f} ± {self.tps_stddev:.1f} t/s"
        if self.runner_up is None or self.ratio is None:
            only = "the only local cell" if self.split else "the only cell measured"
            return f"{head} ({only}){self.energy}{self.split}"
        noise = "beyond noise" if self.significant else "within noise"
        tail = f"{self.builds}{self.energy}{self.split}"
        return f"{head}, {self.ratio:.2f}x {self.runner_up}: {noise}{tail}"

    def json_fields(self) -> dict[str, object]:
        """What the JSON export adds to the fields (cli.console.to_json)."""
        return {"line": self.line}


def verdicts(cells: Sequence[CellResult]) -> list[Verdict]:
    """One verdict per test (in the order tests first appear) over the ok cells of a run;
    a cell whose output check found it wrong is never ranked (`unranked` says so), nor is a
    test device (the SYCL CPU device: its row says it is no contender, so no verdict may
    name it fastest or runner-up)."""
    by_test: dict[str, list[tuple[CellResult, Measurement]]] = {}
    splits: dict[str, list[tuple[CellResult, Measurement]]] = {}
    for cell in cells:
        contender = cell.ok and not _wrong(cell)
        contender = contender and not backends.is_test_device(cell.backend, cell.driver)
        for m in cell.measurements if contender else ():
            # A split (bench --rpc) is not ranked among the local cells: it is set against
            # the fastest of them (`split_cost`).
            (splits if cell.rpc else by_test).setdefault(m.test, []).append((cell, m))
    for test in splits:
        by_test.setdefault(test, [])
    found = []
    for test, local in by_test.items():
        entries = local or splits.get(test, [])  # no local cell measured it: splits alone
        ranked = sorted(entries, key=lambda e: e[1].tps, reverse=True)
        cell, m = ranked[0]
        other = ranked[1] if len(ranked) > 1 else None
        ratio = None
        significant = False
        if other is not None and other[1].tps > 0:
            ratio = m.tps / other[1].tps
            gap = m.tps - other[1].tps
            significant = gap > NOISE_SIGMAS * math.hypot(m.tps_stddev, other[1].tps_stddev)
        found.append(
            Verdict(
                test=test,
                winner=cell_name(cell),
                device=cell.device,
                tps=m.tps,
                tps_stddev=m.tps_stddev,
                runner_up=None if other is None else cell_name(other[0]),
                runner_up_tps=None if other is None else other[1].tps,
                runner_up_stddev=None if other is None else other[1].tps_stddev,
                ratio=ratio,
                significant=significant,
                builds="" if other is None else different_builds(cell, other[0]),
                energy=energy_words(ranked[:2]),
                split="".join(split_cost(ranked[0], s) for s in splits.get(test, []) if local),
            )
        )
    return found


def split_cost(local: tuple[CellResult, Measurement], split: tuple[CellResult, Measurement]) -> str:
    """ "; cpu local 1.70x the split over cpu@…+vulkan/lavapipe@…: beyond noise": the
    fastest local cell against a split, by the same noise rule as every verdict."""
    (cell, m), (over, s) = local, split
    if m.tps <= 0 or s.tps <= 0:
        return ""
    noise = math.hypot(m.tps_stddev, s.tps_stddev) * NOISE_SIGMAS
    said = "beyond noise" if abs(m.tps - s.tps) > noise else "within noise"
    name = split_name(over.rpc)
    if m.tps >= s.tps:
        return f"; {cell_name(cell)} local {m.tps / s.tps:.2f}x {name}: {said}"
    return f"; {name} {s.tps / m.tps:.2f}x {cell_name(cell)} local: {said}"


def energy_words(entries: Sequence[tuple[CellResult, Measurement]]) -> str:
    """ "; J/token above idle: cuda 0.84, vulkan/nvidia 0.71" for the cells that have a
    figure (the others: "no figure"), "" when none was measured."""
    said = []
    for cell, m in entries:
        if m.energy is None:
            continue
        joules = m.energy.joules_per_token
        said.append(f"{cell_name(cell)} {'no figure' if joules is None else f'{joules:.3g}'}")
    if not any(m.energy and m.energy.joules_per_token is not None for _, m in entries):
        return ""
    return f"; J/token above idle: {', '.join(said)}"


def model_labels(details: Sequence[db.RunDetail]) -> dict[str, str]:
    """Each model of these runs (by `RunInfo.model_key`, in order of first appearance) and
    the label that names it; two models of one label get their sha256's start to tell them
    apart."""
    keys: dict[str, str] = {}
    for detail in details:
        keys.setdefault(detail.run.info.model_key, detail.run.info.model_label)
    labels = list(keys.values())
    return {
        key: f"{label} ({key[:12]})" if labels.count(label) > 1 else label
        for key, label in keys.items()
    }


def unranked(cell: CellResult) -> str:
    """ "vulkan/radv: wrong output (KL 2.3 vs CPU), not ranked" for a cell whose stack
    computed something else than the CPU on this model, else "": a fast wrong answer never
    wins."""
    if not _wrong(cell) or cell.output is None:
        return ""
    return f"{cell_name(cell)}: {cell.output.brief()}, not ranked"


def _wrong(cell: CellResult) -> bool:
    return cell.output is not None and cell.output.wrong


def different_builds(a: CellResult, b: CellResult) -> str:
    """ "; not the same llama.cpp: rocm ran build 11434, vulkan/radv 11669" when two cells
    ran different llama.cpp builds (a fair comparison needs one build), else ""."""
    build_a, build_b = llama_build(a), llama_build(b)
    if not build_a or not build_b or build_a == build_b:
        return ""
    return f"; not the same llama.cpp: {cell_name(a)} ran build {build_a}, {cell_name(b)} {build_b}"


def mixed_builds(named: Sequence[tuple[str, str]]) -> str:
    """A warning when (cell name, llama.cpp build) pairs hold more than one build, else ""."""
    by_build: dict[str, list[str]] = {}
    for name, build in named:
        if build and name not in by_build.setdefault(build, []):
            by_build[build].append(name)
    if len(by_build) < 2:
        return ""
    listed = "; ".join(f"build {b}: {', '.join(names)}" for b, names in sorted(by_build.items()))
    return (
        f"warning: these cells ran different llama.cpp builds ({listed}): a gap between "
        "them is the GPU stack and llama.cpp's own changes together"
    )


def llama_build(cell: CellResult) -> str:
    return cell.provenance.get("llama_cpp_build", "")


def compare(a: db.RunDetail, b: db.RunDetail) -> list[Change]:
    """Per-cell, per-test change from run A to run B.

    Cells match by backend, driver and their order among cells of that backend/driver
    (the n-th vulkan/radv cell of A against the n-th of B), not by device text: a failed
    cell only knows the device it was meant for. Runs of two models are not compared: a
    change from a 7B to an 8B model is the model's, not the stack's (USAGE).
    """
    if a.run.info.model_key != b.run.info.model_key:
        labels = model_labels([a, b])
        raise VkramaError(
            f"run {a.run.id} measured {labels[a.run.info.model_key]} and run {b.run.id} "
            f"{labels[b.run.info.model_key]}: a change between two models is not the stack's",
            hint=f"compare two runs of one model; `vkrama results report {a.run.id} "
            f"{b.run.id}` shows both, each model in its own section",
            status=ExitStatus.USAGE,
        )
    left, right = _index(a, b), _index(b, a)
    changes = []
    for key in list(left) + [k for k in right if k not in left]:
        backend, driver, _, test = key
        (ta, sa, status_a, device_a) = left.get(key, (None, None, None, ""))
        (tb, sb, status_b, device_b) = right.get(key, (None, None, None, ""))
        change = noise = None
        significant = False
        if ta is not None and tb is not None and sa is not None and sb is not None and ta > 0:
            change, noise, significant = _difference(ta, sa, tb, sb)
        device = device_a or device_b
        changes.append(
            Change(backend, driver or None, device, test, ta, tb, sa, sb, change, noise,
                   significant, status_a, status_b)
        )  # fmt: skip
    return changes


def _difference(ta: float, sa: float, tb: float, sb: float) -> tuple[float, float, bool]:
    """(change %, noise %, beyond noise?) from A to B: the one noise rule of vkrama."""
    change = (tb - ta) / ta * 100
    noise = NOISE_SIGMAS * math.hypot(sa, sb) / ta * 100
    return change, noise, abs(change) > noise


_Entry = tuple[float | None, float | None, CellStatus | None, str]


def _index(run: db.RunDetail, other: db.RunDetail) -> dict[tuple[str, str, int, str], _Entry]:
    tests = _tests(run) | _tests(other)
    found: dict[tuple[str, str, int, str], _Entry] = {}
    seen: dict[tuple[str, str], int] = {}
    for cell in run.cells:
        name = (cell.backend, cell.driver or "")
        nth = seen[name] = seen.get(name, -1) + 1
        if cell.ok:
            for test, value, stddev in figures(cell):
                found[(name[0], name[1], nth, test)] = (value, stddev, CellStatus.OK, cell.device)
        else:
            for test in sorted(tests):
                found[(name[0], name[1], nth, test)] = (None, None, cell.status, cell.device)
    return found


def _tests(run: db.RunDetail) -> set[str]:
    return {test for cell in run.cells for test, _, _ in figures(cell)}


def figures(cell: CellResult) -> list[tuple[str, float, float]]:
    """(test, tokens/s, stddev) of a cell: llama-bench's tests, or a serving bench's total
    output tokens/s per level as `serve:tps@N`. A level's stddev is its standard error:
    the spread of its requests' decode rates over sqrt(requests), scaled to the total."""
    found = [(m.test, m.tps, m.tps_stddev) for m in cell.measurements]
    for level in cell.serving:
        answered = level.requests - level.failures
        spread = level.decode_tps
        relative = spread.stdev / spread.mean if spread and spread.mean else 0.0
        error = level.output_tps * relative / math.sqrt(answered) if answered else 0.0
        if level.arrival is None:  # closed loop: open-loop levels differ in rate per stack
            found.append((f"serve:tps@{level.concurrency}", level.output_tps, error))
    sustained = capacity(judged(cell.serving))
    if sustained is not None:
        found.append((CAPACITY, sustained.rate, 0.0))
    return found


def _ranked(cell: CellResult, metric: str) -> list[Measurement]:
    """The cell's figures of `metric`, as measurements (a serving level's test by name)."""
    if SERVE_METRIC.fullmatch(metric) or metric == CAPACITY:
        return [Measurement(t, 0, 0, v, sd, ()) for t, v, sd in figures(cell) if t == metric]
    if metric == JOULES:
        return [m for m in cell.measurements if m.metric == "tg" and _joules(m) is not None]
    return [m for m in cell.measurements if m.metric == metric]


def _joules(m: Measurement) -> float | None:
    return m.energy.joules_per_token if m.energy is not None else None


def _checked_ok(cell: CellResult, found: dict[tuple[str, str, str], OutputCheck]) -> bool:
    """The stack's output check said ok: the one stored with the cell, else its newest."""
    check = cell.output or found.get((cell.backend, cell.driver or "", cell.image_id))
    return check is not None and check.verdict == OK_OUTPUT


def best(
    settings: Settings, model_sha256: str, gpu_key: str, metric: str = "tg"
) -> BestCell | None:
    """The fastest stored (backend, driver) for this model and GPU, by its newest result.

    Each (backend, driver) counts with its newest successful measurement; only
    measurements of the same test as the newest one (e.g. tg128) are ranked, so a later run
    with other parameters or a failed cell never compares unlike numbers. A stack whose
    output check found it wrong (at the bench, or its newest check) is never picked. Runs with
    `--depth` are ranked at their shallowest depth (0 when measured): a new chat's context.
    `metric` "serve:tps@N" ranks `bench --serve` runs by total output tokens/s at N clients;
    "capacity" (or "goodput") by the highest request rate sustained within their --slo;
    "joules" by the least J/token above idle in generation (tg rows), only stacks whose
    output check said ok.
    """
    metric = CAPACITY if metric in ("goodput", "capacity") else metric
    if metric not in (*METRICS, CAPACITY, JOULES) and not SERVE_METRIC.fullmatch(metric):
        raise ValueError(f"metric must be one of {METRICS}, capacity, joules or serve:tps@N")
    from vkrama.results import checks

    found = checks.newest(settings, model_sha256, gpu_key)
    wrong = {k for k, c in found.items() if c.wrong}
    measured: list[_Candidate] = []
    for record in db.list_runs(settings):  # newest first
        info = record.info
        if info.model_sha256 != model_sha256 or info.gpu_key != gpu_key or not record.ok_count:
            continue
        detail = db.get_run(settings, record.id)
        measured += [
            (-(_joules(m) or 0.0) if metric == JOULES else m.tps, detail, cell, m)
            for cell in detail.cells
            # A test device (the SYCL CPU device) is never a contender.
            # A split (bench --rpc) is not a stack `serve --backend best` can start.
            if cell.ok
            and not cell.rpc
            and not backends.is_test_device(cell.backend, cell.driver)
            and not _wrong(cell)
            and (cell.backend, cell.driver or "", cell.image_id) not in wrong
            and (metric != JOULES or _checked_ok(cell, found))
            for m in _ranked(cell, metric)
        ]
    if not measured:
        return None
    # A server starts every chat with an empty context: rank at the shallowest depth
    # measured (0 unless every run used --depth without 0), never across depths.
    depth = min(c[3].n_depth for c in measured)
    test: str | None = None
    newest: dict[tuple[str, str], _Candidate] = {}
    for candidate in measured:
        _, _, cell, m = candidate
        if m.n_depth != depth or (test is not None and m.test != test):
            continue
        test = m.test
        newest.setdefault((cell.backend, cell.driver or ""), candidate)
    ranked = sorted(newest.values(), key=lambda c: c[0], reverse=True)
    _, detail, cell, m = ranked[0]
    # A test at depth says so in its name (tg128 @ d4096); depth 0 is said here.
    at = "" if m.n_depth else " at depth 0"
    unit = "t/s"
    if m.test == CAPACITY:
        # Capacity has no spread to give: say what it is, and whether it is a lower bound.
        unit = f"requests/s within the SLO{_at_least(cell)}"
        reason = f"highest capacity{at} (the highest request rate whose level met the SLO): "
        reason += f"{cell_name(cell)} on {cell.device} at {m.tps:.3g} {unit}"
    elif metric == JOULES:
        unit = "J/token above idle"
        reason = f"least energy per generated token ({m.test}{at}, output check ok): "
        reason += f"{cell_name(cell)} on {cell.device} at {_joules(m):.3g} {unit}, "
        reason += f"{m.tps:.1f} ± {m.tps_stddev:.1f} t/s"
    else:
        reason = f"fastest {m.test}{at}: {cell_name(cell)} on {cell.device} at {m.tps:.1f} ± "
        reason += f"{m.tps_stddev:.1f} {unit}"
    reason += f" (bench run {detail.run.id}, {detail.run.info.started})"
    busy = {cell.busy_host: cell_name(cell)} if cell.busy_host else {}
    if len(ranked) > 1:
        _, other_run, other, other_m = ranked[1]
        value = f"{other_m.tps:.1f} {unit}"
        if metric == JOULES:
            value = f"{_joules(other_m):.3g} {unit}"
        if m.test == CAPACITY:
            value = f"{other_m.tps:.3g} requests/s within the SLO{_at_least(other)}"
        reason += f" vs {cell_name(other)} at {value} (run {other_run.run.id})"
        if other.busy_host:
            busy.setdefault(other.busy_host, cell_name(other))
        reason += different_builds(cell, other)
    for why, name in busy.items():
        # A verdict from disturbed numbers may be wrong: say so where the choice is made.
        reason += f"; warning: {name} was measured on a busy host ({why}), rerun the bench"
    return BestCell(
        run_id=detail.run.id,
        started=detail.run.info.started,
        backend=cell.backend,
        driver=cell.driver,
        device=cell.device,
        test=m.test,
        tps=m.tps,
        tps_stddev=m.tps_stddev,
        image_id=cell.image_id,
        reason=reason,
    )


_Candidate = tuple[float, db.RunDetail, CellResult, Measurement]


def _at_least(cell: CellResult) -> str:
    found = capacity(judged(cell.serving))
    return ", at least: no rate tried broke it" if found and found.at_least else ""


def cell_name(cell: CellResult) -> str:
    """A cell as people name it: "vulkan/radv", "cpu"; with bench --tuned, its flags too:
    "vulkan/radv tuned (-ub 1024 -fa on)"."""
    if cell.rpc:
        return split_name(cell.rpc)
    name = f"{cell.backend}/{cell.driver}" if cell.driver else cell.backend
    if cell.tuned.startswith("not tuned"):  # bench.tuned.NOT_TUNED: at llama-bench's defaults
        return f"{name} ({cell.tuned})"
    return f"{name} tuned ({cell.tuned})" if cell.tuned else name
