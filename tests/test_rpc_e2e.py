"""A model split over ggml RPC workers of two backends on this host, end to end: real
podman, the real images' rpc-server and llama-server, loopback only.

The split's cost against the same model served on one host is measured and printed (run
with -s to see it); no assertion depends on this machine's speed.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from vkrama import config, images
from vkrama.engine import Engine
from vkrama.images import local

pytestmark = [pytest.mark.podman, pytest.mark.slow]

Vkrama = Any  # the `vkrama` fixture: runs the CLI, returns a Result
# Lavapipe compiles its pipelines on a worker's first use of each shape (over a minute
# on a loaded 2-core box); the Mesa cache below keeps them for the tests after the first.
SLOW_S = "600"


@pytest.fixture(scope="module")
def rpc_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One VKRAMA_HOME for the module: the vulkan worker's compiled pipelines are kept."""
    return tmp_path_factory.mktemp("rpc-home")


@pytest.fixture(scope="module")
def rpc_images(engine: Engine, backend_image: Any) -> None:
    """The cpu and vulkan images with ggml's RPC module (rebuilt where an image of this
    machine predates it; a fresh machine builds them with it)."""
    for backend in ("cpu", "vulkan"):
        backend_image(backend)
        built = local.built(engine, backend)
        if built is None or "rpc_protocol" not in built.provenance:
            images.build(engine, images.plan(backend, config.load()))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def benches_of(engine: Engine, model: Path) -> set[str]:
    """Bench containers of this model file (others' benches share this podman)."""
    mine = {"vkrama.role": "bench", "vkrama.model": f"file://{model}"}
    return {c.id for c in engine.containers(mine)}


def ours(engine: Engine, names: set[str]) -> set[str]:
    return {c.name for c in engine.containers({}) if c.name in names}


@pytest.fixture
def started(engine: Engine) -> Iterator[set[str]]:
    """Names of the containers a test started; each must be gone at its end."""
    names: set[str] = set()
    yield names
    left = ours(engine, names)
    for container in engine.containers({}):
        if container.name in left:
            engine.remove(container.id)
    assert not left, f"containers left behind: {sorted(left)}"


def worker(vkrama: Vkrama, home: Path, started: set[str], *args: str) -> dict[str, Any]:
    port = str(free_port())
    done = vkrama("rpc-worker", *args, "--port", port, "--json", "--timeout", SLOW_S,
                  env={"VKRAMA_HOME": str(home)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    row: dict[str, Any] = json.loads(done.stdout)
    started.add(row["name"])
    assert row["endpoint"] == f"127.0.0.1:{port}"
    return row


def serve(vkrama: Vkrama, home: Path, started: set[str], *args: str) -> tuple[str, str]:
    # vkrama's own flags first: what follows `--` in `args` goes to llama-server.
    done = vkrama("serve", "--port", "auto", "-d", "--timeout", SLOW_S, *args,
                  env={"VKRAMA_HOME": str(home)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    name, url = done.stdout.split()
    started.add(name)
    return name, url


def generate(url: str, tokens: int = 32) -> dict[str, Any]:
    """One chat, greedy, a fixed number of tokens; llama-server's own timings of it."""
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Count to ten."}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    response = requests.post(f"{url}/v1/chat/completions", json=body, timeout=300)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


@pytest.fixture
def two_workers(
    vkrama: Vkrama, rpc_images: None, rpc_home: Path, started: set[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A cpu worker (one thread) and a vulkan worker on lavapipe, on loopback."""
    cpu = worker(vkrama, rpc_home, started, "--backend", "cpu", "--threads", "1")
    vulkan = worker(vkrama, rpc_home, started, "--backend", "vulkan", "--vk-driver", "lavapipe")
    return cpu, vulkan


def test_a_model_split_over_a_cpu_and_a_lavapipe_worker_answers_and_its_cost_is_measured(
    vkrama: Vkrama, tiny_model: Path, engine: Engine, rpc_home: Path, started: set[str],
    two_workers: tuple[dict[str, Any], dict[str, Any]],
) -> None:  # fmt: skip
    cpu, vulkan = two_workers
    assert (cpu["backend"], vulkan["backend"], vulkan["driver"]) == ("cpu", "vulkan", "lavapipe")
    listed = {row["name"]: row for row in json.loads(vkrama("ps", "--json").stdout)}
    for row in (cpu, vulkan):
        assert listed[row["name"]]["url"] == f"rpc://{row['endpoint']}"
        assert listed[row["name"]]["state"] == "running"

    endpoints = f"{cpu['endpoint']},{vulkan['endpoint']}"
    # `-lv 4` after `--` reaches llama-server, which then says where each layer went.
    name, url = serve(vkrama, rpc_home, started, str(tiny_model), "--rpc", endpoints,
                      "--", "-lv", "4", "--threads", "1")  # fmt: skip
    log = vkrama("logs", name).stdout
    assert "offloaded 5/5 layers to GPU" in log
    for row in (cpu, vulkan):  # both workers hold part of the model
        assert f"[{row['endpoint']}] model buffer size" in log, log[-3000:]
    split = generate(url)
    assert split["choices"][0]["message"]["content"]  # random weights: any text

    # The same model on one host, cpu, one thread like the cpu worker.
    local_name, local_url = serve(vkrama, rpc_home, started, str(tiny_model), "--backend", "cpu",
                                  "--", "--threads", "1")  # fmt: skip
    local = generate(local_url)
    ratio = split["timings"]["predicted_per_second"] / local["timings"]["predicted_per_second"]
    load = Path("/proc/loadavg").read_text().split()[0]
    print(
        f"\nsplit cpu+lavapipe over RPC: {split['timings']['predicted_per_second']:.1f} t/s, "
        f"one host cpu: {local['timings']['predicted_per_second']:.1f} t/s "
        f"(generation, 32 tokens): {ratio:.2f}x, load {load}"
    )
    stopped = vkrama("stop", name, local_name, cpu["name"], vulkan["name"])
    assert stopped.returncode == 0, stopped.stderr
    assert ours(engine, started) == set()


@pytest.mark.parametrize(
    "value",
    ["127.0.0.1", "127.0.0.1:0", "no-such-host.invalid:50052", "127.0.0.1:50052,"],
    ids=["no-port", "port-0", "unresolvable-host", "empty-item"],
)
def test_a_bad_rpc_value_is_a_usage_error(vkrama: Vkrama, tiny_model: Path, value: str) -> None:
    done = vkrama("serve", str(tiny_model), "--rpc", value, "--dry-run")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("Error: --rpc") and "Traceback" not in done.stderr, done.stderr


def test_a_worker_that_never_started_is_one_error_naming_it_and_nothing_starts(
    vkrama: Vkrama, tiny_model: Path, engine: Engine, started: set[str]
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    before = {c.id for c in engine.containers({"vkrama.role": "serve"})}
    done = vkrama("serve", str(tiny_model), "--rpc", nobody, "--port", "auto", "-d")
    assert done.returncode == 11, done.stderr  # NETWORK
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"Error: RPC worker not reachable: {nobody}", done.stderr
    assert all(line.startswith("Hint: ") for line in lines[1:]), done.stderr
    assert {c.id for c in engine.containers({"vkrama.role": "serve"})} == before


def test_the_worker_is_locked_down_and_binds_loopback_unless_told(vkrama: Vkrama) -> None:
    done = vkrama("rpc-worker", "--backend", "cpu", "--port", "50999", "--dry-run")
    assert done.returncode == 0, done.stderr
    command = done.stdout.strip().splitlines()[-1]
    locked = ("--user 1000:1000", "--cap-drop all", "--security-opt no-new-privileges",
              "--read-only", "--network host", "rpc-server --host 127.0.0.1 --port 50999",
              "--env LLAMA_CACHE=/cache/rpc", "/vkrama-home/cache/rpc,dst=/cache/rpc")  # fmt: skip
    for part in locked:
        assert part in command, command
    assert "warning" not in done.stderr

    exposed = vkrama("rpc-worker", "--backend", "cpu", "--host", "0.0.0.0", "--dry-run")
    assert exposed.returncode == 0, exposed.stderr
    assert "rpc-server --host 0.0.0.0 --port 50052" in exposed.stdout
    assert exposed.stderr.startswith("warning: ggml's RPC protocol has no authentication")


def test_a_worker_on_a_taken_port_fails_before_anything_starts(
    vkrama: Vkrama, engine: Engine, rpc_images: None
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        before = {c.id for c in engine.containers({"vkrama.role": "rpc-worker"})}
        done = vkrama("rpc-worker", "--backend", "cpu", "--port", port)
    assert done.returncode == 16, done.stderr  # PORT_IN_USE
    assert {c.id for c in engine.containers({"vkrama.role": "rpc-worker"})} == before


def test_images_list_shows_the_rpc_module_each_image_was_built_with(
    vkrama: Vkrama, rpc_images: None
) -> None:
    documents = {d["backend"]: d for d in json.loads(vkrama("images", "list", "--json").stdout)}
    for backend in ("cpu", "vulkan"):
        provenance = documents[backend]["provenance"]
        # rpc.sh read these from the source tree it compiled and timed its own compile.
        assert provenance["rpc_protocol"].count(".") == 2, provenance
        assert provenance["rpc_source_sha256"] and int(provenance["rpc_build_s"]) >= 0
    table = vkrama("images", "list").stdout
    assert f"{documents['cpu']['provenance']['rpc_llama_cpp_build']} (protocol" in table


def test_a_worker_lost_mid_serve_ends_the_leader_with_its_log_and_leaves_nothing(
    vkrama: Vkrama, tiny_model: Path, engine: Engine, rpc_images: None, rpc_home: Path,
    started: set[str],
) -> None:  # fmt: skip
    import os
    import subprocess
    import sys

    cpu = worker(vkrama, rpc_home, started, "--backend", "cpu", "--threads", "1")
    leader = subprocess.Popen(
        [sys.executable, "-m", "vkrama", "serve", "--port", "auto", "--timeout", SLOW_S,
         "--backend", "cpu", "--rpc", cpu["endpoint"], str(tiny_model)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "VKRAMA_HOME": str(rpc_home)},
    )  # fmt: skip
    try:
        assert leader.stderr is not None
        banner = leader.stderr.readline()
        assert banner.startswith("Serving tiny at "), banner
        name, url = banner.split()[5], banner.split()[3].removesuffix("/v1")
        started.add(name)
        assert vkrama("stop", cpu["name"]).returncode == 0
        # The next request needs the worker: ggml's RPC client aborts llama-server.
        with pytest.raises(requests.RequestException):
            generate(url, tokens=4)
        out, err = leader.communicate(timeout=120)
    finally:
        leader.kill()
    assert leader.returncode == 7, err  # CONTAINER_EXITED
    assert f"Error: {name} exited with code" in err, err
    assert "Remote RPC server crashed" in out, out[-2000:]  # its log, as it was followed
    assert ours(engine, started) == set()


def test_bench_runs_a_split_cell_over_a_cpu_and_a_lavapipe_worker_against_a_local_cell(
    vkrama: Vkrama, tiny_model: Path, engine: Engine, rpc_home: Path,
    two_workers: tuple[dict[str, Any], dict[str, Any]],
) -> None:  # fmt: skip
    cpu, vulkan = two_workers
    endpoints = f"{cpu['endpoint']},{vulkan['endpoint']}"
    done = vkrama("bench", str(tiny_model), "--backend", "cpu", "--rpc", endpoints, "-p", "64",
                  "-n", "16", "-r", "3", "--threads", "1", "--timeout", SLOW_S, "--json",
                  env={"VKRAMA_HOME": str(rpc_home)}, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["backend"], r["test"], r["status"]) for r in rows] == [
        ("cpu", "pp64", "ok"), ("cpu", "tg16", "ok"), ("rpc", "pp64", "ok"), ("rpc", "tg16", "ok")
    ]  # fmt: skip
    split = rows[2]
    # Each worker said what it is (its container's labels): backend, device, address.
    assert split["rpc"] == [
        {"address": cpu["endpoint"], "backend": "cpu", "driver": None, "device": "CPU"},
        {"address": vulkan["endpoint"], "backend": "vulkan", "driver": "lavapipe",
         "device": "llvmpipe (lavapipe)"},
    ]  # fmt: skip
    assert split["device"] == (
        f"cpu CPU@{cpu['endpoint']} + vulkan/lavapipe llvmpipe (lavapipe)@{vulkan['endpoint']}"
    )
    assert split["reason"].startswith("output not checked: ")
    name = f"the split over cpu@{cpu['endpoint']}+vulkan/lavapipe@{vulkan['endpoint']}"
    # Which of the two is faster is this host's business; that the verdict of each test sets
    # the fastest local cell against the split, by name and ratio, is not.
    said = rf"; (cpu local \d+\.\d\dx {re.escape(name)}|{re.escape(name)} \d+\.\d\dx cpu local)"
    for row in rows:
        assert re.search(said + r": (beyond|within) noise", row["verdict"]), row["verdict"]
    shown = vkrama("results", "show", str(split["run_id"]), "--json",
                   env={"VKRAMA_HOME": str(rpc_home)})  # fmt: skip
    assert json.loads(shown.stdout)[0]["rows"][2]["rpc"] == split["rpc"]  # stored as named
    assert benches_of(engine, tiny_model) == set()
    load = Path("/proc/loadavg").read_text().split()[0]
    figures = [f"{r['backend']} {r['test']} {r['tps']:.1f} ± {r['tps_stddev']:.1f}" for r in rows]
    print(f"\nbench, load {load}: " + "; ".join(figures))
    assert vkrama("stop", cpu["name"], vulkan["name"]).returncode == 0


def test_bench_with_a_worker_that_never_started_is_one_error_naming_it_and_starts_nothing(
    vkrama: Vkrama, tiny_model: Path, engine: Engine
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    done = vkrama("bench", str(tiny_model), "--backend", "cpu", "--rpc", nobody)
    assert done.returncode == 11, done.stderr  # NETWORK
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"Error: RPC worker not reachable: {nobody}", done.stderr
    assert all(line.startswith("Hint: ") for line in lines[1:]), done.stderr
    assert benches_of(engine, tiny_model) == set()
    assert json.loads(vkrama("results", "list", "--json").stdout) == []  # no run stored


def test_bench_serve_url_measures_a_server_split_over_an_rpc_worker_as_any_other(
    vkrama: Vkrama, tiny_model: Path, engine: Engine, rpc_images: None, rpc_home: Path,
    started: set[str],
) -> None:  # fmt: skip
    cpu = worker(vkrama, rpc_home, started, "--backend", "cpu", "--threads", "1")
    name, url = serve(vkrama, rpc_home, started, str(tiny_model), "--rpc", cpu["endpoint"],
                      "--parallel", "2", "--", "-lv", "4", "--threads", "1")  # fmt: skip
    log = vkrama("logs", name).stdout
    assert "offloaded 5/5 layers to GPU" in log  # every layer on the worker
    assert f"[{cpu['endpoint']}] model buffer size" in log, log[-3000:]
    done = vkrama("bench", "--serve", "--url", url, "--concurrency", "1,2", "--requests", "4",
                  "--gen-tokens", "8", "--prompt-tokens", "32", "--json",
                  env={"VKRAMA_HOME": str(rpc_home)}, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["backend"], r["concurrency"], r["requests"], r["failures"]) for r in rows] == [
        ("url", 1, 4, 0), ("url", 2, 4, 0)
    ]  # fmt: skip
    assert rows[0]["device"].startswith(f"{url} (tiny, build ")
    assert all(r["output_tps"] > 0 for r in rows), rows
    assert vkrama("stop", name, cpu["name"]).returncode == 0
    assert ours(engine, started) == set()
