"""`vkrama tune` end to end: real podman, real llama-bench in the cpu and vulkan (lavapipe)
images, the tiny model, small budgets (each test well under two minutes on 2 cores: a budget
is an upper bound, and a search over two flags at pp64 ends in ~30 s here; lavapipe's first
trial compiles its shaders, so its budget leaves room for that on a loaded host)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from containers import bench_containers

from vkrama.engine import Engine
from vkrama.errors import ExitStatus

pytestmark = [pytest.mark.podman, pytest.mark.slow]

SMALL = ("-p", "64", "-r", "2")
LINE = re.compile(
    r"^(?P<stack>[a-z/]+): (llama-bench's defaults stay, no flag beat them beyond noise"
    r"|(-\w+ \S+ ?)+: \d+\.\d\d× its defaults \(.*\), beyond noise"
    r"|llama-bench's defaults stay: (-\w+ \S+ ?)+ tried, \d+\.\d\d× its defaults \(.*\),"
    r" within noise)"
)


@pytest.mark.parametrize(
    ("cells", "stack"),
    [
        (("--backend", "cpu"), "cpu"),
        (("--backend", "vulkan", "--vk-driver", "lavapipe"), "vulkan/lavapipe"),
    ],
    ids=["cpu", "vulkan-lavapipe"],
)
def test_tune_searches_with_real_llama_bench_and_stores_every_trial(
    vkrama: Callable[..., Any], tiny_model: Path, engine: Engine, cells: tuple[str, ...],
    stack: str,
) -> None:  # fmt: skip
    done = vkrama("tune", str(tiny_model), *cells, *SMALL, "--flags", "fa,ub", "--budget", "150s")
    assert done.returncode == 0, done.stderr
    line = done.stdout.splitlines()[0]
    assert LINE.match(line) and line.startswith(f"{stack}: "), line
    assert "trying -fa auto,on,off (2 reps)" in done.stderr
    assert bench_containers(engine, tiny_model) == []

    (tuned,) = json.loads(vkrama("tune", "--show", str(tiny_model), "--json").stdout)
    assert (tuned["objective"], tuned["test"]) == ("pp", "pp64")
    # The image named is one podman holds (asked of podman, not of vkrama: another session
    # may rebuild the tag meanwhile, so by id), and the one every trial's cell ran on.
    image_id = tuned["image_id"]
    assert subprocess.run(["podman", "image", "exists", image_id]).returncode == 0, image_id
    assert hashlib.sha256(tiny_model.read_bytes()).hexdigest() == tuned["model_sha256"]
    assert tuned["line"] == line
    # No trial runs past the budget (pure tests in test_tune_search pin that on fake clocks);
    # podman's create and remove around the last one do, by as much as a loaded host makes
    # them take (20 s at load 14 on 2 cores), so here only a runaway is caught.
    assert set(tuned["flags"]) >= {"fa", "ub"} and tuned["spent_s"] <= 2 * 150
    assert tuned["defaults"]["ub"] == "512" and tuned["trials"] >= 2
    # A best that measured slower than the defaults is never called a gain.
    if tuned["tps"] <= tuned["default_tps"]:
        assert not tuned["beyond_noise"] and "defaults stay" in line, line

    # Every trial is a stored cell, every swept value a row that says it.
    (run,) = json.loads(vkrama("results", "show", str(tuned["run_id"]), "--json").stdout)
    assert {row["image_id"] for row in run["rows"]} == {image_id}
    tests = [row["test"] for row in run["rows"]]
    assert {"pp64 fa=auto", "pp64 fa=on", "pp64 fa=off"} <= set(tests)
    assert any(t.startswith("pp64 ub=") for t in tests)
    assert run["run"]["status"] == "ok" and run["run"]["params"]["tune"]["objective"] == "pp"


def test_a_budget_too_small_for_one_trial_stores_no_tuning(
    vkrama: Callable[..., Any], tiny_model: Path, engine: Engine
) -> None:
    done = vkrama("tune", str(tiny_model), "--backend", "cpu", *SMALL, "--budget", "0.1s",
                  "--json")  # fmt: skip
    assert done.returncode == ExitStatus.BUDGET, done.stderr
    (failed,) = json.loads(done.stdout)  # --json lists the stack that failed, too
    assert failed["stack"] == "cpu" and failed["exit_code"] == ExitStatus.BUDGET
    assert failed["failed"].startswith("--budget is too small for one trial: 0.1s")
    error, hint = done.stderr.strip().splitlines()[-2:]
    assert error.startswith("Error: cpu: --budget is too small for one trial: 0.1s for this stack")
    assert hint.startswith("Hint: give --budget of at least ")
    assert json.loads(vkrama("tune", "--show", "--json").stdout) == []
    (run,) = json.loads(vkrama("results", "list", "--json").stdout)
    assert run["status"] == "failed"
    assert bench_containers(engine, tiny_model) == []


def test_an_interrupted_tuning_is_marked_and_stores_no_half_outcome(
    vkrama: Callable[..., Any], tiny_model: Path, engine: Engine
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "vkrama", "tune", str(tiny_model), "--backend", "cpu", *SMALL,
         "--budget", "5m"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if "trying -fa" in line:
            break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == ExitStatus.INTERRUPTED, rest
    assert "Interrupted" in rest
    assert json.loads(vkrama("tune", "--show", "--json").stdout) == []
    (run,) = json.loads(vkrama("results", "list", "--json").stdout)
    assert run["status"] == "interrupted"
    assert bench_containers(engine, tiny_model) == []


def test_bench_tuned_and_serve_best_use_what_tune_found(
    vkrama: Callable[..., Any], tiny_model: Path, engine: Engine
) -> None:
    done = vkrama("tune", str(tiny_model), "--backend", "cpu", *SMALL, "--flags", "fa",
                  "--budget", "40s", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    (tuned,) = json.loads(done.stdout)
    # Applied only when it won beyond noise; else the cell runs (and says) the defaults.
    won = tuned["beyond_noise"]
    flags = " ".join(f"-{f} {v}" for f, v in tuned["flags"].items() if tuned["defaults"][f] != v)
    flags = flags if won else ""
    bench = vkrama("bench", str(tiny_model), "--backend", "cpu,vulkan", "--vk-driver",
                   "lavapipe", "--tuned", "-p", "64", "-n", "0", "-r", "2", "--json")  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    rows = json.loads(bench.stdout)
    assert [(r["backend"], r["test"], r["status"]) for r in rows] == [
        ("cpu", "pp64", "ok"), ("vulkan", "pp64", "ok"),
    ]  # fmt: skip
    verdict = rows[0]["verdict"]
    assert f"cpu tuned ({flags or 'defaults'})" in verdict, verdict
    assert "vulkan/lavapipe (not tuned for pp64)" in verdict, verdict
    serve = vkrama("--dry-run", "serve", str(tiny_model), "--backend", "best", "--rank-by", "pp")
    assert serve.returncode == 0, serve.stderr
    assert "localhost/vkrama/cpu:latest llama-server" in serve.stdout
    assert "--backend best: fastest tuned for pp64: cpu" in serve.stderr
    assert bench_containers(engine, tiny_model) == []


def test_llama_server_takes_every_tuned_flag_of_a_cpu_stack(
    vkrama: Callable[..., Any], tiny_model: Path, engine: Engine
) -> None:
    import hashlib

    import requests

    from vkrama import config, hardware
    from vkrama.results import tunings

    settings = config.load()
    flags = {"fa": "on", "ub": "256", "b": "512", "ctk": "q8_0", "ctv": "q8_0", "t": "1"}
    tunings.save(settings, tunings.TunedStack(
        gpu_key=hardware.detect_host(settings).gpu_key(None),
        model_sha256=hashlib.sha256(tiny_model.read_bytes()).hexdigest(), backend="cpu",
        driver=None, device="CPU", driver_version="ggml", image_id="sha256:c", objective="pp",
        test="pp512", flags=flags, defaults={"fa": "auto", "ub": "512", "b": "2048",
        "ctk": "f16", "ctv": "f16", "t": "2"}, tps=2.0, tps_stddev=0.1, default_tps=1.0,
        default_stddev=0.1, beyond_noise=True, spent_s=1.0, trials=2,
    ))  # fmt: skip
    done = vkrama("serve", str(tiny_model), "--backend", "best", "--rank-by", "pp", "--port",
                  "auto", "-d", "--timeout", "120")  # fmt: skip
    assert done.returncode == 0, done.stderr
    name, url = done.stdout.split()
    try:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        answer = requests.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert answer.status_code == 200 and answer.json()["choices"]
        # It answered with these on its command line: llama-server took every one of them.
        inspect = ["podman", "inspect", name, "--format", "{{json .Config.Cmd}}"]
        command = json.loads(subprocess.run(inspect, capture_output=True, text=True).stdout)
        assert command[command.index("--n-gpu-layers") + 2 :][:12] == [
            "--flash-attn", "on", "--ubatch-size", "256", "--batch-size", "512",
            "--cache-type-k", "q8_0", "--cache-type-v", "q8_0", "--threads", "1",
        ]  # fmt: skip
        assert "--backend best: fastest tuned for pp512: cpu" in done.stderr
    finally:
        vkrama("stop", name)


class Meter:
    """A fake energy counter drawing IDLE_W, and BUSY_W while a container runs: the joules
    it has counted since it was made, integrated over the draw it was set to."""

    IDLE_W, BUSY_W = 20.0, 80.0

    def __init__(self) -> None:
        import threading
        import time

        self.clock, self.lock = time.time, threading.Lock()
        self.at, self.joules, self.watts = self.clock(), 0.0, self.IDLE_W

    def read(self) -> float:
        with self.lock:
            return self.joules + self.watts * (self.clock() - self.at)

    def draw(self, watts: float) -> None:
        with self.lock:
            now = self.clock()
            self.joules += self.watts * (now - self.at)
            self.at, self.watts = now, watts


class Drawing:
    """The real podman, the meter drawing BUSY_W from a container's start to its end."""

    def __init__(self, engine: Engine, meter: Meter) -> None:
        self.engine, self.meter = engine, meter

    def run_to_completion(self, spec: Any, timeout: Any = None, **watchers: Any) -> Any:
        self.meter.draw(Meter.BUSY_W)
        try:
            return self.engine.run_to_completion(spec, timeout, **watchers)
        finally:
            self.meter.draw(Meter.IDLE_W)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def test_tune_for_joules_ranks_tokens_per_joule_above_idle_at_a_known_wattage(
    settings: Any, engine: Engine, tiny_model: Path
) -> None:
    """Real llama-bench in the cpu image, a fake CPU counter at 20 W idle and 80 W while a
    trial's container runs: each test's tokens per joule is its own t/s over 60 W, known
    from the rows' samples without vkrama's arithmetic. 6 repetitions of pp2048 and tg256
    keep a test past the counter's shortest (2.5 s) on this 2-core box; a host fast enough
    to run one quicker must say so, with tune's own flags as the hint."""
    from vkrama.hardware.power import ENERGY, Counter, PowerCounters
    from vkrama.results import db
    from vkrama.tune import session

    meter = Meter()
    request = session.TuneRequest(
        str(tiny_model), ("cpu",), objective="joules", n_prompt=2048, n_gen=256,
        budget_s=120, repetitions=6, only=("fa",),
    )  # fmt: skip
    fake = PowerCounters(cpu=(Counter("fake", ENERGY, meter.read),))
    planned = session.prepare(settings, request, engine, power=fake)
    outcome = session.execute(Drawing(engine, meter), settings, planned)  # type: ignore[arg-type]
    assert not outcome.interrupted
    assert outcome.run_id is not None
    cells = db.get_run(settings, outcome.run_id).cells
    per_joule: dict[bool, list[float]] = {}
    assert cells[0].ok, cells[0].reason  # a later trial may meet the budget's end
    for cell in cells:
        for row in cell.measurements:
            found = row.energy
            assert found is not None and found.idle_watts == pytest.approx(Meter.IDLE_W, rel=0.05)
            if found.seconds < 2.5:  # a fast host: said, never a figure
                assert found.note.startswith("too short to measure"), found
                continue
            # tokens per counted second from llama-bench's own per-repetition t/s
            rate = len(row.samples) / sum(1 / s for s in row.samples)
            assert found.joules_per_token is not None, found
            assert found.watts == pytest.approx(Meter.BUSY_W, rel=0.05)
            assert 1 / found.joules_per_token == pytest.approx(rate / 60, rel=0.05)
            per_joule.setdefault(cell is cells[0], []).append(rate / 60)
    if outcome.failed:  # the defaults ran too short to measure: the stack says why
        ((_, error),) = outcome.failed
        assert "too short to measure" in error.message and "tune's -r, -p or -n" in error.message
        return
    (tuned,) = outcome.tuned
    assert (tuned.objective, tuned.test, tuned.unit) == ("joules", "pp2048+tg256", "tokens/J")
    assert "tokens/J pp2048+tg256" in tuned.line
    # The defaults' trial ran first; a rerun of them pools more repetitions into the figure.
    pp, tg = per_joule[True]
    assert tuned.default_tps == pytest.approx((pp * tg) ** 0.5, rel=0.2)
