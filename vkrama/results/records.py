"""What a bench run leaves behind: cells, their measurements and their status.

Stage: results. The records bench writes and every reader (store, ranking, report,
`serve --backend best`) reads; they live here, not in bench/, so that results never imports
bench. Pure data: nothing here reads files, prints or talks to podman.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from vkrama.results.energy import Energy
from vkrama.results.levels import LevelStats

# Other processes using a quarter of a CPU on average already cost llama.cpp's spinning
# threads visibly; an idle desktop stays far below it.
BUSY_CPUS = 0.25


class CellStatus(str, Enum):
    """How a bench cell ended (stored as its value in the results DB)."""

    OK = "ok"
    FAILED = "failed"  # it ran and did not measure (the reason says why)
    INTERRUPTED = "interrupted"
    UNAVAILABLE = "unavailable"  # asked for, but this host cannot run it (never started)

    def __str__(self) -> str:  # tables and messages show the word, not the member name
        return self.value


class RunStatus(str, Enum):
    """Where a bench run stands: running until its last cell ended, then its verdict."""

    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    ABANDONED = "abandoned"  # its vkrama died (kill -9, crash, reboot) before finishing it

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class HostLoad:
    """The host around one cell; None where it could not be read."""

    cpus: int
    load_before: float | None = None  # 1-minute load average
    load_after: float | None = None
    others_cpus: float | None = None  # CPUs other processes kept busy during the cell, mean
    gpu_users_before: tuple[str, ...] | None = None  # "PID NAME MEMORY", from nvidia-smi
    gpu_users_after: tuple[str, ...] | None = None

    @property
    def busy(self) -> str:
        """Why the cell's numbers may be low ("" when the host was quiet)."""
        why = []
        if self.others_cpus is not None and self.others_cpus >= BUSY_CPUS:
            why.append(f"other processes kept {self.others_cpus:.2f} of {self.cpus} CPUs busy")
        users = sorted({*(self.gpu_users_before or ()), *(self.gpu_users_after or ())})
        if users:
            why.append(f"the GPU was in use by {', '.join(users)}")
        if not why:
            return ""
        if self.load_before is not None and self.load_after is not None:
            why.append(f"load {self.load_before:.2f} before, {self.load_after:.2f} after")
        return "; ".join(why)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpus": self.cpus,
            "load_before": self.load_before,
            "load_after": self.load_after,
            "others_cpus": self.others_cpus,
            "gpu_users_before": _list(self.gpu_users_before),
            "gpu_users_after": _list(self.gpu_users_after),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostLoad:
        return cls(
            cpus=int(data.get("cpus") or 0),
            load_before=data.get("load_before"),
            load_after=data.get("load_after"),
            others_cpus=data.get("others_cpus"),
            gpu_users_before=_tuple(data.get("gpu_users_before")),
            gpu_users_after=_tuple(data.get("gpu_users_after")),
        )


def _list(users: tuple[str, ...] | None) -> list[str] | None:
    return None if users is None else list(users)


def _tuple(users: list[str] | None) -> tuple[str, ...] | None:
    return None if users is None else tuple(users)


@dataclass(frozen=True)
class Measurement:
    """One llama-bench test of one cell: tokens/s mean, stddev and every sample."""

    test: str  # "pp512", "tg128", "pp512+tg128"; " @ d4096" at a depth; " fa=on" when varied
    n_prompt: int
    n_gen: int
    tps: float
    tps_stddev: float
    samples: tuple[float, ...]
    backends: str = ""  # llama-bench's `backends` field, e.g. "Vulkan"
    gpu_info: str = ""
    n_depth: int = 0  # context tokens already in the KV cache (llama-bench -d)
    # The llama-bench settings this row ran with, by llama-bench's flag ("ub": "256",
    # "fa": "on", "ctk": "q8_0", ...): what `vkrama tune` searches. {} in rows before schema 8.
    flags: dict[str, str] = field(default_factory=dict)
    # Repetitions run while the stack still compiled its GPU code on first use, kept but not
    # counted in tps and tps_stddev (`samples` are the counted ones); () before schema 9.
    cold_samples: tuple[float, ...] = ()
    # The counted samples still include such a cold one: none could be dropped.
    cold_counted: bool = False
    # What the counted repetitions drew from the device's own counter (bench.energy); None
    # where nothing was measured (rows before schema 12, imports).
    energy: Energy | None = None

    @property
    def metric(self) -> str:
        """ "pp", "tg" or "pp+tg": what `results.best` ranks by."""
        if self.n_prompt and self.n_gen:
            return "pp+tg"
        return "pp" if self.n_prompt else "tg"


UNKNOWN = "unknown"


@dataclass(frozen=True)
class RpcWorker:
    """One worker of a split cell (bench --rpc), as it said what it is: the labels of a
    `vkrama rpc-worker` container on this host; another's backend and device are unknown."""

    address: str  # HOST:PORT as llama.cpp's --rpc took it
    backend: str = UNKNOWN
    driver: str | None = None
    device: str = UNKNOWN

    @property
    def name(self) -> str:
        """ "vulkan/lavapipe@127.0.0.1:50053": how a verdict names it."""
        return f"{self.backend}/{self.driver}@{self.address}" if self.driver else (
            f"{self.backend}@{self.address}")  # fmt: skip

    @property
    def label(self) -> str:
        """ "vulkan/lavapipe llvmpipe (lavapipe)@127.0.0.1:50053": a row's device."""
        known = self.device != UNKNOWN
        return self.name.replace("@", f" {self.device}@", 1) if known else self.name

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RpcWorker:  # written with dataclasses.asdict
        return cls(str(data["address"]), str(data.get("backend", UNKNOWN)),
                   data.get("driver"), str(data.get("device", UNKNOWN)))  # fmt: skip


def split_name(workers: tuple[RpcWorker, ...]) -> str:
    """ "the split over cpu@127.0.0.1:50052+vulkan/lavapipe@127.0.0.1:50053"."""
    return "the split over " + "+".join(w.name for w in workers)


@dataclass(frozen=True)
class CellResult:
    """A cell after running: its status, what ran, every measurement and the raw JSON."""

    backend: str
    driver: str | None
    device: str
    status: CellStatus
    reason: str = ""
    image: str = ""
    image_id: str = ""
    provenance: dict[str, str] = field(default_factory=dict)
    measurements: tuple[Measurement, ...] = ()
    raw_json: Any = None
    stderr_tail: str = ""
    command: tuple[str, ...] = ()
    duration_s: float = 0.0
    host_load: HostLoad | None = None  # None: not recorded (a cell that never ran, old runs)
    gpus: tuple[int, ...] = ()  # host GPU indices the cell used (several: a split); () cpu
    serving: tuple[LevelStats, ...] = ()  # a serving bench's levels (bench --serve)
    # bench --tuned: the flags `vkrama tune` found, which this cell ran with ("-ub 256 -fa
    # on"; "defaults" when none beat them; "not tuned" when the stack has no tuning yet).
    # "" in a plain run.
    tuned: str = ""
    # The output check this cell's stack passed or failed before it was measured (`bench`
    # runs it unless --no-check); None: not checked.
    output: OutputCheck | None = None
    # bench --rpc: the ggml RPC workers a split cell spread the model over; () a local cell.
    rpc: tuple[RpcWorker, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == CellStatus.OK

    @property
    def busy_host(self) -> str:
        """Why this cell's numbers may be low because of the host ("" if quiet or unknown)."""
        return self.host_load.busy if self.host_load is not None else ""


def read_status(status: str, reason: str) -> tuple[CellStatus, str]:
    """A cell's status and reason as another vkrama wrote them (an export, an old results
    file). Before `UNAVAILABLE` existed, such a cell was `failed` with its reason prefixed
    "unavailable: "; it reads back as what it was."""
    legacy = "unavailable: "
    if status == CellStatus.FAILED.value and reason.startswith(legacy):
        return CellStatus.UNAVAILABLE, reason.removeprefix(legacy)
    return CellStatus(status), reason


def note(status: CellStatus, reason: str) -> str:
    """A cell's reason as the note under a table says it: one that never ran says so."""
    return f"{status}: {reason}" if status == CellStatus.UNAVAILABLE else reason


def test_name(n_prompt: int, n_gen: int, flash_attn: str | None = None, depth: int = 0) -> str:
    """llama-bench's own names ("pp512", "tg128 @ d4096"), plus " fa=on" when fa varies."""
    if n_prompt and n_gen:
        name = f"pp{n_prompt}+tg{n_gen}"
    elif n_prompt:
        name = f"pp{n_prompt}"
    else:
        name = f"tg{n_gen}"
    if depth:
        name += f" @ d{depth}"
    return f"{name} fa={flash_attn}" if flash_attn else name


def expected_tests(
    n_prompt: int, n_gen: int, flash_attn: tuple[str, ...] = (), depth: tuple[int, ...] = ()
) -> list[str]:
    """Test names the cells of a run should report (a failed cell gets one row per name), in
    llama-bench's order: flash attention outermost, then depth, then pp before tg."""
    fas: tuple[str | None, ...] = flash_attn or (None,)
    shapes = [(n_prompt, 0), (0, n_gen)]
    return [
        test_name(p, n, fa, d) for fa in fas for d in depth or (0,) for p, n in shapes if p or n
    ]


# The output check's verdict that keeps a stack out of every ranking.
WRONG = "wrong"


@dataclass(frozen=True)
class OutputCheck:
    """One stack's divergence from the CPU reference on one model, with one image."""

    gpu_key: str
    model_sha256: str
    backend: str
    driver: str | None
    device: str
    image_id: str
    verdict: str  # ok | drift | wrong
    reason: str  # "KL 0.0012 mean, 0.0041 p99 vs CPU, top-1 100% of 87 decisive tokens"
    kl_mean: float
    kl_p99: float
    top1: float  # share of positions with the reference's most likely token
    server_args: tuple[str, ...] = ()  # what the stack's llama-server ran with beyond serve's
    env: dict[str, str] = field(default_factory=dict)  # and the environment laid over its own
    build: str = ""  # the llama.cpp build of the reference (and, normally, the stack)
    seconds: float = 0.0  # what checking this stack took (its server's start included)
    figures: dict[str, Any] = field(default_factory=dict)  # divergence.Divergence.as_dict()
    run_id: int | None = None  # the bench run it was made for; None: `vkrama check`
    created: str = ""

    @property
    def name(self) -> str:
        return f"{self.backend}/{self.driver}" if self.driver else self.backend

    @property
    def wrong(self) -> bool:
        return self.verdict == WRONG

    def brief(self) -> str:
        """ "wrong output (KL 2.3 vs CPU)": what a verdict line says of it."""
        return f"{self.verdict} output (KL {self.kl_mean:.3g} vs CPU)"

    def to_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["server_args"] = list(self.server_args)
        return found

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutputCheck:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["server_args"] = tuple(known.get("server_args") or ())
        return cls(**known)
