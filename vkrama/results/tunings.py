"""Each stack's tuned llama-bench settings as `vkrama tune` found them: stored, looked up,
and said in one line.

Stage: results (the `tuned` table of the results database). `tune` writes a `TunedStack`
when a stack's search has finished; `bench --tuned` and `serve --backend best` read the
newest per stack for a model and GPU. Must not import tune, bench or serve, print, or talk
to podman.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any

from vkrama.backends.env_switches import env_of, is_switch
from vkrama.config import Settings
from vkrama.llama_flags import FLAG
from vkrama.results import db


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
    objective: str  # pp | tg | both | joules
    test: str  # e.g. "pp2048"
    flags: dict[str, str]  # the best configuration, every searched flag
    defaults: dict[str, str]
    # The objective at `flags`: t/s (for both: geometric mean of pp and tg), or for joules
    # tokens per joule above idle (geometric mean of pp and tg; `unit` says which).
    tps: float
    tps_stddev: float
    default_tps: float
    default_stddev: float
    beyond_noise: bool
    spent_s: float
    trials: int
    stopped_by_budget: bool = False
    run_id: int | None = None  # the run whose cells are the trials
    created: str = field(default_factory=db.now)
    # Why the won flags are not applied: the stack's output with them failed its check
    # against the CPU ("-fa on -ctk q4_0: drift output (KL 0.012 mean, ...)"); "" none.
    refused: str = ""

    @property
    def key(self) -> str:
        return f"{self.backend}/{self.driver}" if self.driver else self.backend

    @property
    def unit(self) -> str:
        return "tokens/J" if self.objective == "joules" else "t/s"

    def figure(self, value: float) -> str:
        """A value of the objective as printed: t/s to 0.1, tokens/J to 3 significant figures
        (an 8B model's generation is a few tokens per joule, a tiny one's hundreds)."""
        return f"{value:.3g}" if self.objective == "joules" else f"{value:.1f}"

    @property
    def gain(self) -> float:
        return self.tps / self.default_tps if self.default_tps else 1.0

    @property
    def tried(self) -> dict[str, str]:
        """The flags the search's best sets differently from the defaults, won or not."""
        return {f: v for f, v in self.flags.items() if self.defaults.get(f) != v}

    @property
    def changed(self) -> dict[str, str]:
        """The flags to apply: those tried, only when they beat the defaults beyond noise
        (a tuning within noise answers "the defaults are as good"), and never when their
        output check refused them (a faster wrong answer is no answer)."""
        return self.tried if self.beyond_noise and not self.refused else {}

    @property
    def bench_args(self) -> tuple[str, ...]:
        """The changed flags as llama-bench takes them: ("-ub", "256", "-fa", "on")."""
        return _bench_args(self.changed)

    @property
    def tried_args(self) -> tuple[str, ...]:
        return _bench_args(self.tried)

    @property
    def env(self) -> dict[str, str]:
        """The stack's own switches that won (backends.env_switches): the container's
        environment, for llama-bench and llama-server alike, never their arguments."""
        return env_of(self.changed)

    @property
    def tried_settings(self) -> str:
        return _said(self.tried)

    @property
    def settings(self) -> str:
        """Every applied change as a person reads it: "-ub 256 GGML_VK_DISABLE_F16=1"."""
        return _said(self.changed)

    @property
    def server_args(self) -> tuple[str, ...]:
        """The changed flags as llama-server takes them."""
        return self.server_args_without(())

    def server_args_without(self, given: Collection[str]) -> tuple[str, ...]:
        """The changed flags as llama-server takes them, but for those the user `given`
        (flag keys: "ngl"): a flag the user gave always wins over a tuned one."""
        changed = {f: v for f, v in self.changed.items() if f not in given and not is_switch(f)}
        return tuple(a for f, v in changed.items() for a in (FLAG[f].server, v))

    @property
    def line(self) -> str:
        """ "vulkan/lavapipe: -ub 256 -fa on: 1.18× its defaults (812.4 vs 688.5 t/s
        pp2048), beyond noise"; "cpu: llama-bench's defaults stay: ..." when none won."""
        figures = (
            f"({self.figure(self.tps)} vs {self.figure(self.default_tps)} {self.unit} {self.test})"
        )
        budget = ", budget spent before every flag was tried" if self.stopped_by_budget else ""
        if not self.tried:
            return f"{self.key}: llama-bench's defaults stay, no flag beat them beyond noise" + (
                f" ({self.figure(self.tps)} {self.unit} {self.test}){budget}"
            )
        if self.refused:  # won, but its output is not the CPU's
            return (
                f"{self.key}: llama-bench's defaults stay: {_said(self.tried)} refused,"
                f" {self.refused} ({self.gain:.2f}× its defaults {figures})"
            )
        if not self.beyond_noise:  # kept as tried, never applied
            return (
                f"{self.key}: llama-bench's defaults stay: {_said(self.tried)} tried,"
                f" {self.gain:.2f}× its defaults {figures}, within noise{budget}"
            )
        flags = self.settings
        return f"{self.key}: {flags}: {self.gain:.2f}× its defaults {figures}, beyond noise{budget}"

    def json_fields(self) -> dict[str, object]:
        """What `tune --json` adds to the fields (cli.console.to_json)."""
        return {"gain": round(self.gain, 4), "line": self.line}


def _bench_args(flags: dict[str, str]) -> tuple[str, ...]:
    """llama.cpp's flags as llama-bench takes them; a stack's switches are not arguments."""
    return tuple(a for f, v in flags.items() if not is_switch(f) for a in (FLAG[f].bench, v))


def _said(flags: dict[str, str]) -> str:
    switches = (f"{k}={v or 'unset'}" for k, v in flags.items() if is_switch(k))
    return " ".join([*_bench_args(flags), *switches])


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


def for_test(
    stacks: list[TunedStack], backend: str, driver: str | None, objective: str, test: str
) -> TunedStack | None:
    """The newest of `stacks` for one backend and driver, made for `objective` at `test`."""
    for tuned in stacks:
        if (tuned.backend, tuned.driver, tuned.objective, tuned.test) == (
            backend, driver, objective, test,
        ):  # fmt: skip
            return tuned
    return None


@dataclass(frozen=True)
class Ranked:
    """`serve --backend best`'s pick among tunings made for one objective at one test."""

    winner: TunedStack
    rivals: list[TunedStack]  # the other stacks tuned for the same objective and test
    untuned: list[str]  # stacks tuned, but not for this objective and test

    @property
    def reason(self) -> str:
        """ "fastest tuned for pp2048: cpu on CPU at 150.0 ± 1.0 t/s with -fa on, of 2 stacks
        tuned for pp2048; not tuned for pp2048: cuda (pp512)"."""
        w = self.winner
        flags = " ".join(w.bench_args) or "its defaults"
        said = (
            f"fastest tuned for {w.test}: {w.key} on {w.device} at {w.tps:.1f} ± "
            f"{w.tps_stddev:.1f} t/s with {flags} (vkrama tune, {w.created}), of"
            f" {len(self.rivals) + 1} stack{'s' if self.rivals else ''} tuned for {w.test}"
        )
        if self.untuned:
            said += f"; not tuned for {w.test}: {', '.join(self.untuned)}"
        return said


def best(settings: Settings, model_sha256: str, gpu_key: str, metric: str) -> Ranked | None:
    """The fastest tuned stack for `metric` (pp or tg; a tuning for both counts when none
    was for the metric alone): what `serve --backend best` starts, with its flags.

    Only tunings of one objective at one test (sizes and depths: "pp2048", "tg128 @ d4096")
    are compared, each stack's newest: the test most stacks were tuned at, then the
    shallowest, then the most recently tuned. A stack tuned only at another test is named
    as such, never ranked against them."""
    found = newest(settings, model_sha256, gpu_key)
    for objective in (metric, "both"):
        by_test: dict[str, dict[str, TunedStack]] = {}
        for tuned in found:  # newest first: each stack's newest tuning of a test stays
            if tuned.objective == objective:
                by_test.setdefault(tuned.test, {}).setdefault(tuned.key, tuned)
        if not by_test:
            continue
        test = max(
            by_test,
            key=lambda t: (
                len(by_test[t]),
                -_depth(t),
                max(x.created for x in by_test[t].values()),
            ),
        )
        ranked = sorted(by_test[test].values(), key=lambda t: t.tps, reverse=True)
        elsewhere = {t.key: t.test for t in found if t.key not in by_test[test]}
        untuned = [f"{key} ({test})" for key, test in sorted(elsewhere.items())]
        return Ranked(ranked[0], ranked[1:], untuned)
    return None


def others(found: list[TunedStack], objective: str) -> list[str]:
    """The tests `found` was tuned at for objectives other than `objective` ("pp2048")."""
    return sorted({t.test for t in found if t.objective not in (objective, "both")})


def test_label(objective: str, n_prompt: int, n_gen: int, depth: tuple[int, ...]) -> str:
    """What a tuning measured, as the row names say it: "pp2048", "tg128 @ d4096"; over
    several depths (their geometric mean) "tg128 @ d0,4096"."""
    p, n = sizes(objective, n_prompt, n_gen)
    name = f"pp{p}+tg{n}" if p and n else f"pp{p}" if p else f"tg{n}"
    return name + (f" @ d{','.join(str(d) for d in depth)}" if any(depth) else "")


def sizes(objective: str, n_prompt: int, n_gen: int) -> tuple[int, int]:
    """What an objective measures: (n_prompt, n_gen) from the user's prompt and gen sizes."""
    both = (n_prompt, n_gen)
    return {"pp": (n_prompt, 0), "tg": (0, n_gen), "both": both, "joules": both}[objective]


def _depth(test: str) -> int:
    """The shallowest depth a test measured: "tg128 @ d0,4096" → 0."""
    _, _, depth = test.partition(" @ d")
    return min(int(d) for d in depth.split()[0].split(",")) if depth else 0
