"""Each stack's tuned llama-bench settings as `vkrama tune` found them: stored, looked up,
and said in one line.

Stage: results (the `tuned` table of the results database). `tune` writes a `TunedStack`
when a stack's search has finished; `bench --tuned` and `serve --backend best` read the
newest per stack for a model and GPU. Must not import tune, bench or serve, print, or talk
to podman.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from vkrama.config import Settings
from vkrama.llama_flags import FLAGS
from vkrama.results import db

# llama-bench's flag -> llama-server's (the server spells them differently, and its -fa
# takes on/off/auto too).
SERVER_FLAGS = {flag.name: flag.server for flag in FLAGS}


@dataclass(frozen=True)
class TunedStack:
    """One stack's search outcome, for one model on one GPU set with one image."""

    gpu_key: str
    model_sha256: str
    backend: str
    driver: str | None
    device: str
    driver_version: str  # the image's stack, e.g. "Mesa 26.2.6-1"
    image_id: str
    objective: str  # pp | tg | both
    test: str  # e.g. "pp2048"
    flags: dict[str, str]  # the best configuration, every searched flag
    defaults: dict[str, str]
    tps: float  # the objective at `flags` (for both: geometric mean of pp and tg)
    tps_stddev: float
    default_tps: float
    default_stddev: float
    beyond_noise: bool
    spent_s: float
    trials: int
    stopped_by_budget: bool = False
    run_id: int | None = None  # the run whose cells are the trials
    created: str = field(default_factory=db.now)

    @property
    def key(self) -> str:
        return f"{self.backend}/{self.driver}" if self.driver else self.backend

    @property
    def gain(self) -> float:
        return self.tps / self.default_tps if self.default_tps else 1.0

    @property
    def changed(self) -> dict[str, str]:
        return {f: v for f, v in self.flags.items() if self.defaults.get(f) != v}

    @property
    def bench_args(self) -> tuple[str, ...]:
        """The changed flags as llama-bench takes them: ("-ub", "256", "-fa", "on")."""
        return tuple(a for f, v in self.changed.items() for a in (f"-{f}", v))

    @property
    def server_args(self) -> tuple[str, ...]:
        """The changed flags as llama-server takes them."""
        return tuple(a for f, v in self.changed.items() for a in (SERVER_FLAGS[f], v))

    @property
    def line(self) -> str:
        """ "vulkan/lavapipe: -ub 256 -fa on: 1.18× its defaults (812.4 vs 688.5 t/s
        pp2048), beyond noise"; "cpu: llama-bench's defaults stay: ..." when none won."""
        figures = f"({self.tps:.1f} vs {self.default_tps:.1f} t/s {self.test})"
        budget = ", budget spent before every flag was tried" if self.stopped_by_budget else ""
        if not self.changed:
            return f"{self.key}: llama-bench's defaults stay, no flag beat them beyond noise" + (
                f" ({self.tps:.1f} t/s {self.test}){budget}"
            )
        noise = "beyond noise" if self.beyond_noise else "within noise"
        flags = " ".join(self.bench_args)
        return f"{self.key}: {flags}: {self.gain:.2f}× its defaults {figures}, {noise}{budget}"

    def json_fields(self) -> dict[str, object]:
        """What `tune --json` adds to the fields (cli.console.to_json)."""
        return {"gain": round(self.gain, 4), "line": self.line}


_COLUMNS = ("run_id", "created", "gpu_key", "model_sha256", "backend", "driver", "device",
            "driver_version", "image_id", "objective", "test")  # fmt: skip


def save(settings: Settings, tuned: TunedStack) -> None:
    record = {k: v for k, v in asdict(tuned).items() if k not in _COLUMNS}
    with db.connect(settings) as conn:
        conn.execute(
            f"INSERT INTO tuned ({', '.join(_COLUMNS)}, record)"
            f" VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})",
            (*(getattr(tuned, c) for c in _COLUMNS), json.dumps(record)),
        )


def newest(
    settings: Settings, model_sha256: str | None = None, gpu_key: str | None = None
) -> list[TunedStack]:
    """The newest tuning of each (model, GPU set, stack, image, objective, test), newest
    first; only those of one model and GPU set when given."""
    where, args = [], []
    for column, value in (("model_sha256", model_sha256), ("gpu_key", gpu_key)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    sql = f"SELECT {', '.join(_COLUMNS)}, record FROM tuned"
    sql += f" WHERE {' AND '.join(where)}" if where else ""
    with db.connect(settings) as conn:
        rows = conn.execute(sql + " ORDER BY id DESC", args).fetchall()
    found: dict[tuple[Any, ...], TunedStack] = {}
    for row in rows:
        fields = dict(zip(_COLUMNS, row[:-1], strict=True))
        tuned = TunedStack(**fields, **json.loads(row[-1]))
        key = (tuned.model_sha256, tuned.gpu_key, tuned.key, tuned.image_id, tuned.objective,
               tuned.test)  # fmt: skip
        found.setdefault(key, tuned)
    return list(found.values())


def for_stack(
    stacks: list[TunedStack], backend: str, driver: str | None, objective: str | None = None
) -> TunedStack | None:
    """The newest of `stacks` for one backend and driver (and objective, when given)."""
    for tuned in stacks:
        if (tuned.backend, tuned.driver) == (backend, driver) and objective in (
            None,
            tuned.objective,
        ):
            return tuned
    return None


def best(settings: Settings, model_sha256: str, gpu_key: str, metric: str) -> TunedStack | None:
    """The fastest tuned stack for `metric` (pp or tg; a tuning for both counts when none
    was for the metric alone), at the shallowest depth tuned: what `serve --backend best`
    starts, with its flags."""
    found = newest(settings, model_sha256, gpu_key)
    for objective in (metric, "both"):
        mine = [t for t in found if t.objective == objective]
        if mine:
            shallowest = min(_depth(t.test) for t in mine)
            at = [t for t in mine if _depth(t.test) == shallowest]
            return max(at, key=lambda t: t.tps)
    return None


def _depth(test: str) -> int:
    """The shallowest depth a test measured: "tg128 @ d0,4096" → 0."""
    _, _, depth = test.partition(" @ d")
    return min(int(d) for d in depth.split()[0].split(",")) if depth else 0
