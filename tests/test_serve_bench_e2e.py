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

from vkrama import config, results
from vkrama.bench.slo import next_rate
from vkrama.engine import Engine
from vkrama.errors import ExitStatus
from vkrama.results.levels import goodput, judged

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


def serve_bench_containers(engine: Engine, model: Path) -> list[str]:
    """This test's serving-bench containers (others use the same podman meanwhile)."""
    mine = {"vkrama.role": "bench", "vkrama.model": model.resolve().as_uri()}
    return [c.name for c in engine.containers(mine)]


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
    assert serve_bench_containers(engine, tiny_model) == []

    detail = results.get_run(config.load(), "latest")
    assert detail.run.info.params["parallel"] == 4
    (cell,) = detail.cells
    for level in cell.serving:
        where = f"{cell.backend} at {level.concurrency}"
        # Every request got exactly the asked-for prompt and output lengths.
        assert level.prompt_tokens == 256 * 4 and level.output_tokens == GEN * 4, where
        assert level.decode_vs_server is not None, where
        assert abs(level.decode_vs_server - 1) < AGREEMENT, where
    # Prompt rates agree where requests do not queue for a slot or share a batch.
    alone = cell.serving[0]
    assert alone.prompt_vs_server is not None
    assert abs(alone.prompt_vs_server - 1) < AGREEMENT
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
    assert serve_bench_containers(engine, tiny_bpe_model) == []


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
        assert level.decode_vs_server is not None
        assert abs(level.decode_vs_server - 1) < AGREEMENT, level.load
        assert level.client_cpu_s is not None and level.server_cpu_s
    assert '"load": "burst"' in done.stdout or "inf" not in rates


def test_a_sweep_raises_the_rate_until_the_slo_breaks_and_reports_goodput(
    vkrama: Callable[..., Any], tiny_model: Path
) -> None:
    # One slot: as arrivals near what it serves, requests queue and TTFT climbs, so the
    # target breaks before the load generator's own limit (idle here: met at 11.3/s, broke
    # at 13.4/s). With two slots and 400 ms an idle box met it at 32/s and the sweep
    # stopped at the generator's limit (64/s) without a break: the test failed.
    done = vkrama("bench", str(tiny_model), "--serve", "--backend", "cpu", "--sweep",
                  "--slo", "ttft_p90=200ms", "--request-rate", "1", "--requests", "16",
                  "--gen-tokens", "8", "--parallel", "1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    (cell,) = results.get_run(config.load(), "latest").cells
    tried = judged(cell.serving)
    assert len(tried) == len(cell.serving)
    # The rates are the sweep's own steps, and it stopped where next_rate says it is over.
    for n, (rate, _) in enumerate(tried):
        assert next_rate(tried[:n], 1.0) == rate
    assert next_rate(tried, 1.0) is None
    assert any(not met for _, met in tried)
    best = goodput(tried)
    said = "none" if best is None else f"{best:.3g} requests/s"
    assert f"cpu: goodput {said} within ttft_p90=200ms" in done.stderr
    assert "goodput within the SLO, cpu:" in done.stdout


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
    assert off.decode_vs_server is not None and abs(off.decode_vs_server - 1) < AGREEMENT
    assert "at 2 clients, cache on: 4 of 4 requests hit it" in done.stdout


def test_serve_backend_best_ranks_by_the_goodput_a_sweep_stored(
    vkrama: Callable[..., Any], tiny_model: Path
) -> None:
    # A target every rate meets: the sweep doubles until its last level (or the most the
    # generator sends here), and that rate is the cell's goodput.
    done = vkrama("bench", str(tiny_model), "--serve", "--backend", "cpu", "--sweep",
                  "--slo", "e2e_p99=600s", "--requests", "4", "--gen-tokens", "8",
                  "--parallel", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    (cell,) = results.get_run(config.load(), "latest").cells
    best = goodput(judged(cell.serving))
    assert best == max(s.rate or 0 for s in cell.serving) and best >= 8
    chosen = vkrama("--dry-run", "serve", str(tiny_model), "--backend", "best",
                    "--rank-by", "goodput")  # fmt: skip
    assert chosen.returncode == 0, chosen.stderr
    said = f"--backend best: fastest serve:goodput at depth 0: cpu on CPU at {best:.1f}"
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
    # Four requests: 25 %, not the 10 % of 8 or more (a loaded box may send one 0.2 s late).
    assert rated.realized_rate is not None and abs(rated.realized_rate / 2.0 - 1) < 0.25


def test_a_rate_the_generator_cannot_send_here_is_refused_saying_the_most_it_can(
    vkrama: Callable[..., Any], tiny_model: Path, engine: Engine
) -> None:
    done = vkrama("bench", str(tiny_model), "--serve", "--backend", "cpu", "--request-rate",
                  "1000000", "--requests", "4", "--gen-tokens", "16", "--json")  # fmt: skip
    assert done.returncode == ExitStatus.BENCH_FAILED, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["reason"].startswith("the load generator cannot send 1e+06 requests/s on this")
    assert "(at most " in row["reason"] and row["requests"] == 0
    assert serve_bench_containers(engine, tiny_model) == []


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
    assert serve_bench_containers(engine, tiny_model) == []


def test_sigterm_under_load_leaves_no_container(tiny_model: Path, engine: Engine) -> None:
    test_an_interrupt_leaves_no_container("cpu concurrency 1:", signal.SIGTERM, tiny_model, engine)
