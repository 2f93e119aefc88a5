"""The oneapi image end to end: built here from PyPI's wheels and Debian, then `bench` and
`serve --backend oneapi` on the SYCL CPU device (Intel's OpenCL CPU runtime), beside cpu.

Real podman, real llama.cpp (Debian's b11669 with cyllama-sycl's SYCL module), the tiny
model. The image is built when this machine lacks it or when its recipe or pins changed
(its label `containerfile_sha256` is the hash of the recipe, its script and its pins).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from vkrama import config, images
from vkrama.engine import Engine
from vkrama.images import local, recipes
from vkrama.images.local import ImageRef

pytestmark = [pytest.mark.podman, pytest.mark.slow, pytest.mark.oneapi]

Vkrama = Callable[..., Any]
# Model load compiles SYCL's SPIR-V kernels for the CPU (seconds idle, minutes on a loaded
# 2-core box): generous bounds, never a speed assertion.
SLOW = 900


@pytest.fixture(scope="session")
def oneapi_image(engine: Engine) -> ImageRef:
    """The oneapi image of this checkout's recipe and pins: reused only when they match."""
    image = local.built(engine, "oneapi")
    wanted = recipes.recipe("oneapi").sha256
    if image is None or image.provenance.get("containerfile_sha256") != wanted:
        image = images.build(engine, images.plan("oneapi", config.load()))
    return image


def containers(engine: Engine, role: str, model: Path) -> list[str]:
    """This session's containers of a role (others may run on the same podman meanwhile)."""
    return [
        c.name
        for c in engine.containers({"vkrama.role": role})
        if c.labels.get("vkrama.model", "") == model.resolve().as_uri()
    ]


@pytest.fixture
def nothing_left(engine: Engine, tiny_model: Path) -> Iterator[None]:
    yield
    left = containers(engine, "bench", tiny_model) + containers(engine, "serve", tiny_model)
    for name in left:
        engine.remove(name)
    assert left == [], f"containers left behind: {left}"


def test_the_image_records_where_its_sycl_module_and_runtime_came_from(
    oneapi_image: ImageRef,
) -> None:
    found = oneapi_image.provenance
    # Debian's llama.cpp and the module are the same llama.cpp build, and it says so.
    assert found["llama_cpp_build"] == found["sycl_module_llama_cpp_build"] == "11669"
    assert (found["sycl_module"], found["sycl_module_version"]) == ("cyllama-sycl", "0.7.0")
    assert found["sycl_module_ggml"] == "0.27.0" and found["sycl_module_compiler"] == "2025.3.3"
    assert (found["dpcpp"], found["mkl"], found["opencl_cpu"]) == (
        "2025.3.3",
        "2025.3.1",
        "2026.2.0",
    )
    assert found["level_zero"] and found["intel_gpu_runtime"]  # Debian's, for Intel GPUs
    # The RPC stage every Debian image shares (rpc.sh): its source, build and protocol.
    assert found["rpc_protocol"].count(".") == 2 and found["rpc_llama_cpp_build"], found


def test_bench_runs_sycl_on_the_cpu_device_beside_cpu(
    vkrama: Vkrama, tiny_model: Path, oneapi_image: ImageRef, nothing_left: None
) -> None:
    done = vkrama(
        "bench", str(tiny_model), "--backend", "cpu,oneapi", "-p", "16", "-n", "4", "-r", "1",
        "--json", timeout=SLOW,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["backend"], r["driver"], r["test"], r["status"]) for r in rows] == [
        ("cpu", None, "pp16", "ok"),
        ("cpu", None, "tg4", "ok"),
        ("oneapi", "opencl-cpu", "pp16", "ok"),
        ("oneapi", "opencl-cpu", "tg4", "ok"),
    ]
    sycl = rows[2]
    # ggml announced the device it ran on (its SYCL table in stderr): the OpenCL CPU device.
    assert sycl["device"].endswith("(opencl:cpu:0)"), sycl["device"]
    assert sycl["image_id"] == oneapi_image.id and sycl["tps"] > 0
    assert "not a contender" in sycl["reason"] and "flash attention off" in sycl["reason"]
    # The first repetition compiled the SPIR-V kernels: kept aside, not counted.
    assert [len(r["cold_samples"]) for r in rows] == [0, 0, 1, 1]
    # The stored run names the image's parts: the row is traceable to the module's build.
    shown = json.loads(vkrama("results", "show", "1", "--json").stdout)[0]
    recorded = next(p for p in shown["provenance"] if p["backend"] == "oneapi")
    assert recorded["sycl_module"] == "cyllama-sycl" and recorded["driver"] == "opencl-cpu"


def greedy(url: str) -> str:
    body = {
        "messages": [{"role": "user", "content": "Count: one, two, three"}],
        "max_tokens": 8,
        "temperature": 0,
    }
    response = requests.post(f"{url}/v1/chat/completions", json=body, timeout=SLOW)
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


def test_serve_on_the_sycl_cpu_device_answers_as_the_cpu_does(
    vkrama: Vkrama, tiny_model: Path, oneapi_image: ImageRef, nothing_left: None
) -> None:
    answers = {}
    for backend in ("cpu", "oneapi"):
        # One slot and 32-token batches: the warm-up then compiles the kernels of small
        # batches only. A whole default ubatch (512 tokens) took over 15 minutes on the CPU
        # device on this loaded box (docs/images.md).
        done = vkrama(
            "serve", str(tiny_model), "--backend", backend, "--port", "auto", "-d",
            "--parallel", "1", "--timeout", str(SLOW),
            # `-lv 4`: llama-server then names the devices it loads the model onto.
            "--", "--ubatch-size", "32", "--batch-size", "32", "-lv", "4", timeout=SLOW + 120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        name, url = done.stdout.split()
        answers[backend] = greedy(url)
        if backend == "oneapi":
            log = vkrama("logs", name).stdout
            assert "SYCL0" in log and "offloaded 5/5 layers to GPU" in log
        assert vkrama("stop", name).returncode == 0
    # Random weights, greedy decoding: the same tokens on both backends, not just some text.
    assert answers["cpu"] and answers["oneapi"] == answers["cpu"]


def test_the_output_check_finds_the_sycl_cpu_device_computes_what_the_cpu_does(
    vkrama: Vkrama, tiny_model: Path, oneapi_image: ImageRef, nothing_left: None
) -> None:
    # Issue 34's check: the CPU's next-token distributions against SYCL's, teacher-forced.
    done = vkrama(
        "check", str(tiny_model), "--backend", "oneapi", "--context", "32", "--positions", "48",
        "--json", timeout=SLOW,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["stacks"]
    assert (row["backend"], row["driver"], row["verdict"]) == ("oneapi", "opencl-cpu", "ok"), row


def test_a_split_over_a_sycl_cpu_rpc_worker_is_benched_beside_cpu(
    vkrama: Vkrama, tiny_model: Path, oneapi_image: ImageRef, engine: Engine, nothing_left: None
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    started = vkrama("rpc-worker", "--backend", "oneapi", "--port", port, "--json",
                     "--timeout", str(SLOW))  # fmt: skip
    assert started.returncode == 0, started.stderr
    worker = json.loads(started.stdout)
    try:
        # Flash attention off: SYCL's flash-attention kernel faults on this device (as for
        # the local SYCL CPU cell), and the worker would die with it.
        done = vkrama("bench", str(tiny_model), "--backend", "cpu", "--rpc", worker["endpoint"],
                      "--fa", "off", "-p", "16", "-n", "4", "-r", "1", "--json",
                      "--timeout", str(SLOW), timeout=SLOW * 2)  # fmt: skip
        assert done.returncode == 0, done.stderr
        split = [r for r in json.loads(done.stdout) if r["backend"] == "rpc"]
        assert [(r["test"], r["status"]) for r in split] == [
            ("pp16 fa=off", "ok"), ("tg4 fa=off", "ok")
        ]  # fmt: skip
        said = {"address": worker["endpoint"], "backend": "oneapi", "driver": "opencl-cpu",
                "device": worker["device"]}  # fmt: skip
        assert split[0]["rpc"] == [said]
    finally:
        assert vkrama("stop", worker["name"]).returncode == 0
    # Stopped after serving a leader, this worker's rpc-server exits on the SIGTERM just as
    # podman escalates: the remove must still go through (engine.remove).
    assert worker["name"] not in {c.name for c in engine.containers({})}
