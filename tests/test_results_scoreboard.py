"""`vkrama results export RUN --format scoreboard`: the table the llama.cpp scoreboards collect."""

# ruff: noqa: E501  (the transcript is asserted exactly, wide table and all)

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench_fakes import cell, store_run

from vkrama import config
from vkrama.results.energy import Energy

SCOREBOARD = """\
vkrama 0.1.0, run 1, 2026-11-25T15:56:20+00:00, host box, kernel 6.1.0
model: tiny: llama, 3.93 M params, F16, 7.51 MiB, sha256 {sha}
GPU: AMD Radeon RX 7900 XTX [1002:744c], kernel driver amdgpu
cpu: CPU, image cpu, llama.cpp 11669, ggml 0.27.0-1
vulkan/lavapipe: llvmpipe (llvmpipe), image vulkan, llama.cpp 11669, ggml 0.27.0-1, Mesa 26.2.6-1
vulkan/radv: failed: ggml_vulkan: No devices found

| model        |     size |   params | backend           |   ngl |   fa |   test |                t/s |   J/token |
|:-------------|---------:|---------:|:------------------|------:|-----:|-------:|-------------------:|----------:|
| llama ?B F16 | 7.51 MiB |   3.93 M | CPU               |     0 | auto |   pp64 | 17965.29 ± 2528.23 |         - |
| llama ?B F16 | 7.51 MiB |   3.93 M | CPU               |     0 | auto |   tg16 |  2922.17 ± 1620.05 |    0.0123 |
| llama ?B F16 | 7.51 MiB |   3.93 M | Vulkan (lavapipe) |    99 | auto |   pp64 |     368.83 ± 16.63 |         - |
| llama ?B F16 | 7.51 MiB |   3.93 M | Vulkan (lavapipe) |    99 | auto |   tg16 |      91.15 ± 15.00 |         - |

build: Debian (11669)
J/token: the energy above the idle draw measured just before each cell, per token, from the device's own counter; - where none was measured
- cpu pp64: too short to measure: raise -r
"""


def test_scoreboard_export_of_a_stored_run(vkrama: Callable[..., Any]) -> None:
    gpu = {"index": 0, "ids": "1002:744c", "name": "AMD Radeon RX 7900 XTX",
           "kernel_driver": "amdgpu"}  # fmt: skip
    cpu = cell("cpu", None, 17965.29, 2922.17, sd=2528.23, tg_sd=1620.05)
    pp, tg = cpu.measurements  # RAPL: pp64 too short for it, tg16 at 0.0123 J/token
    short = Energy("RAPL package-0", None, 9.0, None, 0.1, "too short to measure: raise -r")
    cpu = replace(cpu, measurements=(replace(pp, energy=short), replace(
        tg, energy=Energy("RAPL package-0", 45.0, 9.0, 0.0123, 3.0))))  # fmt: skip
    store_run(
        config.load(),
        cpu,
        cell("vulkan", "lavapipe", 368.83, 91.15, sd=16.63, tg_sd=15.00),
        cell("vulkan", "radv", 0, 0, ok=False),
        gpus=[gpu],
        started="2026-11-25T15:56:20+00:00",
    )
    done = vkrama("results", "export", "1", "--format", "scoreboard")
    assert done.returncode == 0, done.stderr
    assert done.stdout == SCOREBOARD.format(sha="ab" * 32)
