"""bench.stderr and bench.measurements: what ran, read from real ggml/llama-bench output.

The files under tests/data/bench were captured from Debian's llama.cpp build 11669 in the
cpu and vulkan images on this machine (lavapipe with and without GGML_VK_VISIBLE_DEVICES).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vkrama.bench import measurements, stderr

DATA = Path(__file__).parent / "data" / "bench"

CUDA_STDERR = """\
ggml_cuda_init: GGML_CUDA_FORCE_MMQ:    no
ggml_cuda_init: GGML_CUDA_FORCE_CUBLAS: no
ggml_cuda_init: found 1 CUDA devices (Total VRAM: 81079 MiB):
  Device 0: NVIDIA H100 80GB HBM3, compute capability 9.0, VMM: yes, VRAM: 81079 MiB
load_backend: loaded CUDA backend from /usr/lib/x86_64-linux-gnu/ggml/backends0/libggml-cuda.so
"""
ROCM_STDERR = """\
ggml_cuda_init: found 1 ROCm devices:
  Device 0: AMD Radeon RX 7900 XTX, gfx1100 (0x1100), VMM: no, Wave Size: 32
"""
CUDA_FAILED = "ggml_cuda_init: failed to initialize CUDA: no CUDA-capable device is detected\n"
RADV_STDERR = (
    "ggml_vulkan: Found 1 Vulkan devices:\n"
    "ggml_vulkan: 0 = AMD Radeon RX 7900 XTX (RADV NAVI31) (radv) | uma: 0 | fp16: 1 | bf16: 0\n"
)
TWO_VK = RADV_STDERR + (
    "ggml_vulkan: 1 = llvmpipe (LLVM 22.1.8, 256 bits) (llvmpipe) | uma: 0 | fp16: 1\n"
)
SYCL_STDERR = """\
Found 1 SYCL devices:
|  |                   |                                       |       |Max    |
|ID|        Device Type|                                   Name|Version|units  |
|--|-------------------|---------------------------------------|-------|-------|
| 0| [level_zero:gpu:0]|                Intel Arc A770 Graphics|  12.55|    512|
"""


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_llvmpipe_line_gives_device_and_driver_even_with_parentheses_in_the_name() -> None:
    seen = stderr.observe(read("vulkan-llvmpipe.stderr"))
    assert seen.devices == (
        stderr.SeenDevice("Vulkan", 0, "llvmpipe (LLVM 22.1.8, 256 bits)", "llvmpipe"),
    )
    assert not seen.vulkan_none


def test_cuda_and_rocm_device_lines() -> None:
    assert stderr.observe(CUDA_STDERR).devices == (
        stderr.SeenDevice(
            "CUDA", 0, "NVIDIA H100 80GB HBM3", "compute capability 9.0, VMM: yes, VRAM: 81079 MiB"
        ),
    )
    rocm = stderr.observe(ROCM_STDERR).devices[0]
    assert (rocm.api, rocm.name) == ("ROCm", "AMD Radeon RX 7900 XTX")


def test_sycl_table_rows() -> None:
    assert stderr.observe(SYCL_STDERR).devices == (
        stderr.SeenDevice("SYCL", 0, "Intel Arc A770 Graphics", "level_zero:gpu:0"),
    )


def test_sycl_cpu_device_is_one_device_not_two_tables() -> None:
    # Seen on this machine (AMD EPYC, the oneapi image, ONEAPI_DEVICE_SELECTOR=opencl:cpu):
    # the device table, then an optimization table whose rows look like devices.
    assert stderr.observe(read("sycl-opencl-cpu.stderr")).devices == (
        stderr.SeenDevice("SYCL", 0, "AMD EPYC", "opencl:cpu:0"),
    )


CASES = [
    # (id, backend, driver, stderr, llama-bench backends, gpu_info, reason part or None, device)
    ("sycl-cpu-device-that-ran-is-accepted", "oneapi", "opencl-cpu",
     read("sycl-opencl-cpu.stderr"), "SYCL", "AMD EPYC", None, "AMD EPYC (opencl:cpu:0)"),
    ("sycl-gpu-asked-but-the-cpu-device-ran-is-rejected", "oneapi", None,
     read("sycl-opencl-cpu.stderr"), "SYCL", "AMD EPYC", "asked for a SYCL gpu device", None),
    ("sycl-cpu-device-asked-but-a-gpu-ran-is-rejected", "oneapi", "opencl-cpu", SYCL_STDERR,
     "SYCL", "Intel Arc A770 Graphics", "asked for a SYCL cpu device", None),
    ("sycl-gpu-that-ran-is-accepted", "oneapi", None, SYCL_STDERR, "SYCL",
     "Intel Arc A770 Graphics", None, "Intel Arc A770 Graphics (level_zero:gpu:0)"),
    ("lavapipe-that-ran-is-accepted", "vulkan", "lavapipe", read("vulkan-llvmpipe.stderr"),
     "Vulkan", "llvmpipe (LLVM 22.1.8, 256 bits)", None,
     "llvmpipe (LLVM 22.1.8, 256 bits) (llvmpipe)"),
    ("vulkan-without-devices-is-a-cpu-fallback", "vulkan", "lavapipe", read("vulkan-none.stderr"),
     "Vulkan", "", "No devices found", None),
    ("vulkan-without-any-announcement-is-a-fallback", "vulkan", None, "", "Vulkan", "",
     "no Vulkan device", None),
    ("radv-asked-but-llvmpipe-ran-is-a-different-driver", "vulkan", "radv",
     read("vulkan-llvmpipe.stderr"), "Vulkan", "llvmpipe", "asked for Vulkan driver radv", None),
    ("radv-asked-and-radv-ran", "vulkan", "radv", RADV_STDERR, "Vulkan", "AMD Radeon RX 7900 XTX",
     None, "AMD Radeon RX 7900 XTX (RADV NAVI31) (radv)"),
    ("two-vulkan-devices-would-split-the-work", "vulkan", "radv", TWO_VK, "Vulkan", "x",
     "also used other Vulkan devices", None),
    ("empty-gpu-info-means-cpu-although-vulkan-announced", "vulkan", "lavapipe",
     read("vulkan-llvmpipe.stderr"), "Vulkan", "", "empty gpu_info", None),
    ("cuda-device-line-is-accepted", "cuda", None, CUDA_STDERR, "CUDA", "NVIDIA H100 80GB HBM3",
     None, "NVIDIA H100 80GB HBM3"),
    ("cuda-init-failure-is-reported", "cuda", None, CUDA_FAILED, "CUDA", "",
     "could not initialise CUDA: no CUDA-capable device", None),
    ("rocm-asked-but-only-cuda-lines-is-a-fallback", "rocm", None, CUDA_STDERR, "CUDA", "x",
     "no ROCm device", None),
    ("cpu-cell-on-cpu-is-accepted", "cpu", None, read("cpu.stderr"), "CPU", "", None, None),
    ("cpu-cell-that-used-a-gpu-is-rejected", "cpu", None, "", "Vulkan", "x",
     "cpu cell ran on Vulkan", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("backend", "driver", "text", "backends", "gpu_info", "reason", "device"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_verify(
    backend: str,
    driver: str | None,
    text: str,
    backends: str,
    gpu_info: str,
    reason: str | None,
    device: str | None,
) -> None:
    got, seen = stderr.verify(backend, driver, stderr.observe(text), [backends], [gpu_info])
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got
    if device is not None:
        assert seen is not None and seen.label == device


def test_llama_bench_json_gives_pp_and_tg_with_every_sample() -> None:
    found, raw = measurements.parse(read("vulkan-llvmpipe.json"))
    assert [m.test for m in found] == ["pp64", "tg16"]
    assert found[0].tps == pytest.approx(231.784343)
    assert found[0].tps_stddev == pytest.approx(12.876169)
    assert found[0].samples == (240.889, 222.68)
    assert (found[1].metric, found[1].backends, found[1].gpu_info) == (
        "tg",
        "Vulkan",
        "llvmpipe (LLVM 22.1.8, 256 bits)",
    )
    assert raw[0]["build_number"] == 11669


def row_of(samples: list[float]) -> str:
    """A one-row llama-bench JSON whose avg/stddev are llama-bench's over every sample."""
    mean = sum(samples) / len(samples)
    return json.dumps([{"n_prompt": 512, "n_gen": 0, "avg_ts": mean, "stddev_ts": 99.0,
                        "samples_ts": samples, "backends": "Vulkan"}])  # fmt: skip


@pytest.mark.parametrize(
    ("samples", "cold_reps", "tps", "stddev", "counted", "cold", "cold_counted"),
    [
        (
            [3568.0, 10700.0, 10600.0, 10800.0],
            1,
            10700.0,
            100.0,
            (10700.0, 10600.0, 10800.0),
            (3568.0,),
            False,
        ),
        ([3568.0, 10700.0], 1, 10700.0, 0.0, (10700.0,), (3568.0,), False),
        ([3568.0], 1, 3568.0, 99.0, (3568.0,), (), True),
        ([3568.0, 10700.0, 10600.0], 0, 8289.333333, 99.0, (3568.0, 10700.0, 10600.0), (), False),
    ],
    ids=[
        "vulkan-first-repetition-is-kept-aside-and-the-rest-averaged",
        "two-repetitions-leave-one-counted-with-no-spread",
        "one-repetition-is-counted-and-said-to-be-cold",
        "a-stack-that-compiles-nothing-on-first-use-counts-every-repetition",
    ],
)
def test_a_cold_first_repetition_is_not_counted(
    samples: list[float],
    cold_reps: int,
    tps: float,
    stddev: float,
    counted: tuple[float, ...],
    cold: tuple[float, ...],
    cold_counted: bool,
) -> None:
    (found,), raw = measurements.parse(row_of(samples), cold_reps=cold_reps)
    assert found.tps == pytest.approx(tps) and found.tps_stddev == pytest.approx(stddev)
    assert (found.samples, found.cold_samples, found.cold_counted) == (counted, cold, cold_counted)
    assert raw[0]["samples_ts"] == samples  # llama-bench's own record stays whole


def test_flash_attn_values_name_the_tests_when_varied() -> None:
    found, _ = measurements.parse(read("cpu-fa.json"), flash_attn_varied=True)
    assert [m.test for m in found] == ["pp64 fa=on", "tg16 fa=on", "pp64 fa=off", "tg16 fa=off"]


def test_every_swept_setting_is_part_of_the_row_and_its_name() -> None:
    # `-ub 32,64 -b 64 -ctk f16,q8_0 -fa 1`: four rows that once all read "pp64".
    found, _ = measurements.parse(read("cpu-ub-ctk-sweep.json"))
    assert [m.test for m in found] == [
        "pp64 ub=32 ctk=f16",
        "pp64 ub=32 ctk=q8_0",
        "pp64 ub=64 ctk=f16",
        "pp64 ub=64 ctk=q8_0",
    ]
    assert found[1].flags == {
        "ub": "32", "b": "64", "fa": "on", "ctk": "q8_0", "ctv": "f16", "t": "2",
        "ngl": "-1", "ncmoe": "0", "sm": "layer",
    }  # fmt: skip


def test_settings_are_kept_but_not_named_when_nothing_was_swept() -> None:
    found, _ = measurements.parse(read("vulkan-llvmpipe.json"))
    assert [m.test for m in found] == ["pp64", "tg16"]
    assert found[0].flags["ub"] == "512" and found[0].flags["fa"] in ("off", "auto")


@pytest.mark.parametrize(
    ("stdout", "reason"),
    [
        ("", "no JSON array"),
        ("[", "not valid JSON"),
        ("[]", "no results"),
        ('[{"n_prompt": 1}]', "lacks avg_ts"),
    ],
    ids=["empty-output", "truncated-json", "empty-array", "result-without-numbers"],
)
def test_bad_llama_bench_output_is_a_short_reason(stdout: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        measurements.parse(stdout)
