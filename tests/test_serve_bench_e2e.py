"""`vkrama bench --serve` end to end: real podman, real llama-server in the cpu and vulkan
(lavapipe) images, the tiny model, real streaming requests; Ctrl-C at several moments.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from containers import bench_containers

from vkrama import config, results
from vkrama.engine import Engine
from vkrama.errors import ExitStatus
from vkrama.results.levels import LevelStats

pytestmark = [pytest.mark.podman, pytest.mark.slow]

# Small work: this 2-core machine is shared, and lavapipe runs the GPU code on its CPU.
# 128 tokens out: the client's decode rate spans its first to last streamed token, and the
# tiny model decodes ~1 ms a token on 2 cores, so 32 tokens (~30 ms) let a few ms of
# scheduling jitter move it past the 10 % bar now and then (a fresh-clone CI run at 1478491).
GEN = 128
SMALL = (
    "--concurrency",
    "1,4",
    "--prompt-tokens",
    "256",
    "--gen-tokens",
    str(GEN),
    "--requests",
    "4",
)
AGREEMENT = 0.10  # the bar: client figures within 10 % of llama-server's own
# ... or within this many ms of the same span of time: on a loaded 2-core box the client
# sees a prompt of ~40 ms some 8 ms late now and then (prompt_vs_server 0.834 in a
# fresh-clone run), which is scheduling, not a disagreement about the work.
FLOOR_MS = 25.0


def agrees(level: LevelStats, figure: str) -> bool:
    """Whether the client's `figure` (prompt or decode) agrees with llama-server's own for
    the same requests: their rates within AGREEMENT, or the times those rates stand for
    (the server's median prompt or decode time, and the client's at its rate) within
    FLOOR_MS of each other."""
    ratio: float | None = getattr(level, f"{figure}_vs_server")  # client / server, median
    server = level.server_prompt_tps if figure == "prompt" else level.server_decode_tps
    if ratio is None or server is None:
        return False
    answered = level.requests - level.failures
    tokens = (
        level.prompt_tokens / answered if figure == "prompt" else level.output_tokens / answered - 1
    )
    server_ms = 1000 * tokens / server.p50
    return abs(ratio - 1) < AGREEMENT or abs(server_ms / ratio - server_ms) <= FLOOR_MS


@pytest.mark.parametrize(
    ("cells", "device"),
    [
        (("--backend", "cpu"), "CPU"),
        # Lavapipe compiles its shaders on the CPU while llama-server warms up and again for
        # each new batch shape: many minutes on a busy 2-core machine.
        (("--backend", "vulkan", "--vk-driver", "lavapipe"), "llvmpipe"),
    ],
    ids=["cpu", "vulkan-lavapipe"],
)
def test_every_request_is_answered_at_1_and_4_clients_and_agrees_with_the_server(
    cells: tuple[str, ...],
    device: str,
    vkrama: Callable[..., Any],
    tiny_model: Path,
    engine: Engine,
) -> None:
    done = vkrama("bench", str(tiny_model), "--serve", *cells, *SMALL, "--json", timeout=2400)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["concurrency"] for r in rows] == [1, 4]
    for row in rows:
        assert (row["status"], row["requests"], row["failures"]) == ("ok", 4, 0), row
        assert device in row["device"]  # ggml's log says this device really ran
    assert bench_containers(engine, tiny_model) == []

    detail = results.get_run(config.load(), "latest")
    assert detail.run.info.params["parallel"] == 4
    (cell,) = detail.cells
    for level in cell.serving:
        where = f"{cell.backend} at {level.concurrency}"
        # Every request got exactly the asked-for prompt and output lengths.
        assert level.prompt_tokens == 256 * 4 and level.output_tokens == GEN * 4, where
        assert agrees(level, "decode"), (where, level.decode_vs_server)
    # Prompt rates agree where requests do not queue for a slot or share a batch.
    alone = cell.serving[0]
    assert agrees(alone, "prompt"), alone.prompt_vs_server
    assert alone.client_cpu_s is not None and alone.server_cpu_s
    assert alone.client_cpu_s < alone.server_cpu_s / 4

    shown = vkrama("results", "show", "latest")
    assert "TTFT ms p50/p90/p99" in shown.stdout and "load generator CPU" in shown.stdout
    exported = vkrama("results", "export", "latest", "--format", "csv").stdout.splitlines()
    assert len(exported) == 3 and ",ok," in exported[1]


def test_a_model_with_another_tokenizer_template_and_architecture_gets_its_prompts(
    vkrama: Callable[..., Any], tiny_bpe_model: Path, engine: Engine
) -> None:
    # The reported failure's command, on a model whose vocabulary, template and
    # architecture the other tests never use: the default prompt length must work.
    cpu = ("bench", str(tiny_bpe_model), "--serve", "--backend", "cpu", "--json")
    done = vkrama(*cpu, "--concurrency", "1,2", "--gen-tokens", "8", "--requests", "2")
    assert done.returncode == 0, done.stderr
    assert "cpu: prompt 128 tokens" in done.stderr
    (cell,) = results.get_run(config.load(), "latest").cells
    # What the server counted for each request, summed per level: the prompt it was built for.
    assert [(s.requests, s.prompt_tokens) for s in cell.serving] == [(2, 256), (2, 256)]

    # Shorter than the template: the cell fails saying what length works.
    done = vkrama(*cpu, "--concurrency", "1", "--prompt-tokens", "5", "--requests", "1")
    assert done.returncode == ExitStatus.BENCH_FAILED
    reason = json.loads(done.stdout)[0]["reason"]
    assert "with a one-letter message (use --prompt-tokens " in reason
    assert bench_containers(engine, tiny_bpe_model) == []


@pytest.mark.parametrize(
    ("cells", "rates"),
    [
        (("--backend", "cpu"), "4,inf"),
        (("--backend", "vulkan", "--vk-driver", "lavapipe"), "2"),
    ],
    ids=["cpu", "vulkan-lavapipe"],
)
def test_open_loop_levels_send_at_their_rate_and_agree_with_the_server(
    cells: tuple[str, ...], rates: str, vkrama: Callable[..., Any], tiny_model: Path
) -> None:
    done = vkrama("bench", str(tiny_model), "--serve", *cells, "--request-rate", rates,
                  "--arrival", "constant", "--requests", "6", "--gen-tokens", str(GEN),
                  "--slo", "e2e_p99=600s", "--json", timeout=2400)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (cell,) = results.get_run(config.load(), "latest").cells
    wanted = {"4": "4/s constant", "inf": "burst", "2": "2/s constant"}
    assert [s.load for s in cell.serving] == [wanted[r] for r in rates.split(",")]
    for level in cell.serving:
        assert (level.requests, level.failures, level.concurrency) == (6, 0, 0), level.load
        assert level.slo_met is True and level.send_lag_ms is not None
        assert agrees(level, "decode"), (level.load, level.decode_vs_server)
        assert level.client_cpu_s is not None and level.server_cpu_s
    assert '"load": "burst"' in done.stdout or "inf" not in rates


def test_a_sweep_raises_the_rate_until_the_slo_breaks_and_reports_capacity(
    vkrama: Callable[..., Any], tiny_model: Path
) -> None:
    # The mechanics on a real llama-server; where the capacity lies is checked against a
    # stub of known capacity (test_serve_stub.py), as this box's speed is anyone's guess.
    # One slot: as arrivals near what it serves, requests queue and TTFT climbs, so the
    # target breaks before the load generator's own limit (idle: ~20 requests/s of this
    # work). Eight requests a level from 2/s: at load 16 the start broke and the sweep
    # halved to 1/16 of it, which at 16 requests a level from 1/s took over 10 minutes.
    done = vkrama("bench", str(tiny_model), "--serve", "--backend", "cpu", "--sweep",
                  "--slo", "ttft_p90=500ms", "--request-rate", "2", "--requests", "8",
                  "--gen-tokens", "8", "--parallel", "1", "--json", timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (cell,) = results.get_run(config.load(), "latest").cells
    tried = [(s.rate or 0.0, bool(s.slo_met)) for s in cell.serving]
    assert all(s.rate is not None and s.slo_met is not None for s in cell.serving)
    # As docs/serving-bench.md says: from its first rate, doubling while the SLO holds ...
    first_break = next((n for n, (_, met) in enumerate(tried) if not met), None)
    rows = json.loads(done.stdout)
    (capacity,) = {row["capacity"] for row in rows}
    if first_break is None:
        # ... up to its last level or the load generator's limit, if the box is quick
        # enough that no rate broke it (an idle 2-core box in a CI run at 381b095): the
        # capacity is then a lower bound, and said so.
        assert [rate for rate, _ in tried] == [2.0 * 2**k for k in range(len(tried))]
        assert capacity == tried[-1][0] and rows[0]["capacity_at_least"]
        assert f"cpu: capacity at least {capacity:.3g} requests/s within" in done.stderr
        return
    assert [rate for rate, _ in tried[: first_break + 1]] == [
        2.0 * 2**k for k in range(first_break + 1)
    ]
    # ... then each rate below the lowest that broke so far and above the highest that
    # held below it (halving while none held).
    for n in range(first_break + 1, len(tried)):
        broke = min(r for r, met in tried[:n] if not met)
        held = max((r for r, met in tried[:n] if met and r < broke), default=0.0)
        assert held < tried[n][0] < broke, tried
    # The capacity said is a rate that held, with no rate at or below it broken (none
    # when every rate broke, as a box loaded past the tiny model's 1/8 s might make it).
    assert not rows[0]["capacity_at_least"]
    if capacity is None:
        assert not any(met for _, met in tried) and "cpu: capacity none within" in done.stderr
    else:
        assert (capacity, True) in tried and all(met for r, met in tried if r <= capacity)
        assert f"cpu: capacity {capacity:.3g} requests/s within ttft_p90=500ms" in done.stderr
    # Each level's goodput: requests within every target per second of the level, which
    # lasts 7 gaps at the rate really sent and the last answer: at most 8/7 of that rate.
    for row in rows:
        assert 0 <= row["good_requests"] <= row["requests"]
        assert row["goodput"] <= row["realized_rate"] * 8 / 7, row


@pytest.mark.parametrize("cells", [("--backend", "cpu"), ("--backend", "vulkan",
                         "--vk-driver", "lavapipe")], ids=["cpu", "vulkan-lavapipe"])  # fmt: skip
def test_a_shared_prefix_is_measured_with_the_prompt_cache_off_and_on(
    cells: tuple[str, ...], vkrama: Callable[..., Any], tiny_model: Path
) -> None:
    # GEN tokens out, as SMALL: the decode rates are compared below, and 8 tokens of ~1 ms
    # each on an idle box read 1.31x the server's (a CI run at 213719c).
    done = vkrama("bench", str(tiny_model), "--serve", *cells, "--concurrency", "2",
                  "--prompt-tokens", "256", "--prefix-tokens", "192", "--requests", "4",
                  "--gen-tokens", str(GEN), "--prompt-source", "random")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert ": prompt 256 tokens, the first 192 shared by every request" in done.stderr
    detail = results.get_run(config.load(), "latest")
    assert detail.run.info.params["prompt_source"] == "random"
    (cell,) = detail.cells
    off, on = cell.serving
    assert (off.load, on.load) == ("2 clients, cache off", "2 clients, cache on")
    # llama-server's own accounting: nothing reused with the cache off; with it on, every
    # request (the warm-up filled both slots) reused the shared prefix and no more.
    assert (off.cache_hits, off.cached_tokens) == (0, 0)
    assert on.cache_hits == 4
    assert 4 * 180 <= on.cached_tokens <= 4 * 192, on.cached_tokens
    assert agrees(off, "decode"), off.decode_vs_server
    assert "at 2 clients, cache on: 4 of 4 requests hit it" in done.stdout


def test_serve_backend_best_ranks_by_the_capacity_a_sweep_stored(
    vkrama: Callable[..., Any], tiny_model: Path
) -> None:
    # A target every rate meets: the sweep doubles until its last level (or the most the
    # generator sends here), and that rate is the cell's goodput.
    done = vkrama("bench", str(tiny_model), "--serve", "--backend", "cpu", "--sweep",
                  "--slo", "e2e_p99=600s", "--requests", "4", "--gen-tokens", "8",
                  "--parallel", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    (cell,) = results.get_run(config.load(), "latest").cells
    # Every level met it: the capacity is the highest rate tried, and only a lower bound.
    best = max(s.rate or 0 for s in cell.serving)
    assert all(s.slo_met for s in cell.serving) and best >= 8
    assert f"capacity at least {best:.3g} requests/s" in done.stderr
    chosen = vkrama("--dry-run", "serve", str(tiny_model), "--backend", "best",
                    "--rank-by", "goodput")  # fmt: skip
    assert chosen.returncode == 0, chosen.stderr
    said = (
        f"--backend best: highest capacity at depth 0 (the highest request rate whose level "
        f"met the SLO): cpu on CPU at {best:.3g} requests/s within the SLO, at least"
    )
    assert said in chosen.stderr + chosen.stdout
    assert "localhost/vkrama/cpu" in chosen.stdout


def test_levels_by_duration_send_until_their_time_is_up(
    vkrama: Callable[..., Any], tiny_model: Path
) -> None:
    done = vkrama("bench", str(tiny_model), "--serve", "--backend", "cpu", "--concurrency", "2",
                  "--request-rate", "2", "--duration", "2", "--gen-tokens", "8")  # fmt: skip
    assert done.returncode == 0, done.stderr
    detail = results.get_run(config.load(), "latest")
    assert detail.run.info.params["duration_s"] == 2.0
    closed, rated = detail.cells[0].serving
    # Two clients send until 2 s have passed: each at least once. The open loop sends
    # 2/s x 2 s = 4 requests, at 2/s.
    assert closed.requests >= 2 and closed.failures == 0
    assert (rated.requests, rated.failures) == (4, 0)
    # Four requests: 25 %, not the 10 % of 8 or more (a loaded box may send one 0.2 s late),
    # unless the level itself says it was sent late.
    assert rated.realized_rate is not None
    assert abs(rated.realized_rate / 2.0 - 1) < 0.25 or rated.sent_late


def test_a_rate_the_generator_cannot_send_here_is_refused_saying_the_most_it_can(
    vkrama: Callable[..., Any], tiny_model: Path, engine: Engine
) -> None:
    # Below the ceiling refused as flags are read, above what one event loop sends: its
    # cost is measured first (a warm-up round), then the run is a usage error that stores
    # nothing and leaves no container.
    before = len(results.list_runs(config.load()))
    done = vkrama("bench", str(tiny_model), "--serve", "--backend", "cpu", "--concurrency", "1",
                  "--request-rate", "1,9000", "--requests", "4", "--gen-tokens", "16",
                  "--json")  # fmt: skip
    assert done.returncode == ExitStatus.USAGE, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [errors[0]] and errors[0].startswith(
        "Error: the load generator cannot send 9000 requests/s on this"
    )
    assert "Hint: at most " in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
    assert len(results.list_runs(config.load())) == before
    assert bench_containers(engine, tiny_model) == []


def test_bench_url_measures_a_running_vkrama_serve_and_starts_nothing(
    vkrama: Callable[..., Any], tiny_model: Path, engine: Engine
) -> None:
    started = vkrama("serve", str(tiny_model), "--backend", "cpu", "--port", "auto", "-d",
                     "--parallel", "2", "--timeout", "300")  # fmt: skip
    assert started.returncode == 0, started.stderr
    name, url = started.stdout.split()
    try:
        assert url.startswith("http://127.0.0.1:")  # loopback only
        done = vkrama("bench", "--serve", "--url", url, "--concurrency", "2", "--request-rate",
                      "2", "--requests", "8", "--gen-tokens", "16", "--prompt-tokens", "64",
                      "--json", timeout=1200)  # fmt: skip
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)
        assert [(r["backend"], r["load"], r["requests"], r["failures"]) for r in rows] == [
            ("url", "2 clients", 8, 0), ("url", "2/s poisson", 8, 0)
        ]  # fmt: skip
        # The row names the URL and what llama-server says about itself (/props).
        assert (
            rows[0]["device"].startswith(f"{url} (tiny, build ") and "slots 2)" in rows[0]["device"]
        )
        # Sent at its label, or the level says it was not (a loaded box can stall the
        # generator: then the row is marked late, never passed off as 2/s).
        assert abs(rows[1]["realized_rate"] / 2.0 - 1) < 0.10 or rows[1]["sent_late"]
        (cell,) = results.get_run(config.load(), "latest").cells
        assert cell.provenance["prompt_tokens_counted_by"] == "/tokenize"
        for level in cell.serving:  # cut by its /tokenize: about 64 tokens each
            assert abs(level.prompt_tokens / 8 - 64) <= 4, level.prompt_tokens
        # Nothing of the bench's was started: the one server is the one `serve -d` started.
        assert bench_containers(engine, tiny_model) == []
    finally:
        assert vkrama("stop", name).returncode == 0


# Moments to interrupt at: the stderr line after which the signal goes out.
MOMENTS = [
    pytest.param("cell cpu:", id="while-planning"),
    pytest.param("[1/1] cpu: serving from", id="while-the-server-starts"),
    pytest.param("cpu concurrency 1:", id="under-load-at-4-clients"),
    pytest.param("cpu concurrency 4:", id="under-an-open-loop-at-2-per-second"),
]


@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("signum", [signal.SIGINT], ids=["ctrl-c"])
def test_an_interrupt_leaves_no_container(
    moment: str, signum: signal.Signals, tiny_model: Path, engine: Engine
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "vkrama", "bench", str(tiny_model), "--serve",
         "--backend", "cpu", "--concurrency", "1,4", "--request-rate", "2",
         "--prompt-tokens", "32", "--gen-tokens", "16", "--requests", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.strip().startswith(moment):
            break
    else:
        pytest.fail(f"never saw {moment!r}: {''.join(seen)}")
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == ExitStatus.INTERRUPTED, "".join(seen) + stderr
    assert "Traceback" not in stderr
    assert bench_containers(engine, tiny_model) == []


def test_sigterm_under_load_leaves_no_container(tiny_model: Path, engine: Engine) -> None:
    test_an_interrupt_leaves_no_container("cpu concurrency 1:", signal.SIGTERM, tiny_model, engine)
