"""One model over several GPUs: what `serve`, `run` and `bench --dry-run` pass for `--gpu 0,1`,
`--gpu all` and `--gpu each` on hosts laid out as Linux lays them out: every chosen GPU's
nodes (one CDI name per NVIDIA GPU, each render node, /dev/kfd once), the visibility
variables numbering them as the stack inside the container sees them, and llama.cpp's split
options."""

from __future__ import annotations

import itertools
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from bench_fakes import cell, store_run
from fakesys import (
    FakeHost,
    amd_and_nvidia_desktop,
    intel_igpu_and_amd_dgpu,
    two_amd_gpus,
    two_nvidia_h100s,
)
from test_deploy import generate
from test_devices_cli import roots
from test_passthrough_dry_run import parse

from vkrama import config, results
from vkrama.bench import stderr
from vkrama.errors import ExitStatus
from vkrama.results import report

ICD = "/usr/share/vulkan/icd.d"
RADV, ANV, NVIDIA_ICD = f"{ICD}/radeon_icd.json", f"{ICD}/intel_icd.json", f"{ICD}/nvidia_icd.json"
KFD = "/dev/kfd"
R128, R129 = "/dev/dri/renderD128", "/dev/dri/renderD129"
CDI0, CDI1 = "nvidia.com/gpu=0", "nvidia.com/gpu=1"

# (host, flags, devices, env, llama-server's split args)
CASES = {
    "two-amd-vulkan-both-render-nodes-split-by-memory": (
        two_amd_gpus, ["--backend", "vulkan", "--gpu", "0,1"],
        [R128, R129], {"GGML_VK_VISIBLE_DEVICES": "0,1", "VK_DRIVER_FILES": RADV},
        ["--split-mode", "layer", "--tensor-split", "16,24"],
    ),
    "two-amd-rocm-in-the-order-given-kfd-once": (
        two_amd_gpus, ["--backend", "rocm", "--gpu", "1,0"],
        [R129, KFD, R128], {"HIP_VISIBLE_DEVICES": "1,0"},
        ["--split-mode", "layer", "--tensor-split", "24,16"],
    ),
    "two-amd-all-with-row-split-and-own-proportions": (
        two_amd_gpus, ["--gpu", "all", "--split-mode", "row", "--tensor-split", "1,3"],
        [R128, R129], {"GGML_VK_VISIBLE_DEVICES": "0,1", "VK_DRIVER_FILES": RADV},
        ["--split-mode", "row", "--tensor-split", "1,3"],
    ),
    "amd-and-nvidia-vulkan-uses-both-each-through-its-own-driver": (
        amd_and_nvidia_desktop, ["--backend", "vulkan", "--gpu", "0,1"],
        [R128, CDI0],
        {"GGML_VK_VISIBLE_DEVICES": "0,1", "VK_DRIVER_FILES": f"{RADV}:{NVIDIA_ICD}",
         "NVIDIA_DRIVER_CAPABILITIES": "compute,utility,graphics"},
        ["--split-mode", "layer"],  # the 4090's memory is not in sysfs: llama.cpp's own split
    ),
    "amd-and-nvidia-cuda-all-is-the-one-nvidia-gpu": (
        amd_and_nvidia_desktop, ["--backend", "cuda", "--gpu", "all"],
        [CDI0], {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}, [],
    ),
    "intel-igpu-and-amd-vulkan-all-renumbers-discrete-first": (
        intel_igpu_and_amd_dgpu, ["--backend", "vulkan", "--gpu", "all"],
        [R128, R129], {"GGML_VK_VISIBLE_DEVICES": "1,0", "VK_DRIVER_FILES": f"{ANV}:{RADV}"},
        ["--split-mode", "layer"],
    ),
    "intel-igpu-and-amd-dgpu-first-is-the-main-gpu": (
        intel_igpu_and_amd_dgpu, ["--backend", "vulkan", "--gpu", "1,0"],
        [R129, R128], {"GGML_VK_VISIBLE_DEVICES": "0,1", "VK_DRIVER_FILES": f"{RADV}:{ANV}"},
        ["--split-mode", "layer"],
    ),
    "two-h100-cuda-one-cdi-name-each-pci-order": (
        two_nvidia_h100s, ["--backend", "cuda", "--gpu", "all"],
        [CDI0, CDI1],
        {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
         "CUDA_VISIBLE_DEVICES": "0,1"},
        ["--split-mode", "layer"],
    ),
    "two-h100-vulkan-nvidia-reversed": (
        two_nvidia_h100s, ["--vk-driver", "nvidia", "--gpu", "1,0"],
        [CDI1, CDI0],
        {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility,graphics", "VK_DRIVER_FILES": NVIDIA_ICD,
         "GGML_VK_VISIBLE_DEVICES": "1,0"},
        ["--split-mode", "layer"],
    ),
}  # fmt: skip

PINNING = re.compile(r"GGML_|VK_|HIP_|NVIDIA_|ONEAPI_|CUDA_(VISIBLE|DEVICE)")


def bench_split_args(server_args: list[str]) -> list[str]:
    """llama-bench spells them -sm and -ts with / between GPUs."""
    names = {"--split-mode": "-sm", "--tensor-split": "-ts"}
    return [names.get(a, a.replace(",", "/")) for a in server_args]


def split_args(command: list[str]) -> list[str]:
    found = []
    for flag, value in itertools.pairwise(command):
        if flag in ("--split-mode", "--tensor-split", "-sm", "-ts"):
            found += [flag, value]
    return found


@pytest.mark.parametrize("command", ["serve", "bench"])
@pytest.mark.parametrize("case", list(CASES))
def test_dry_run_passes_every_chosen_gpu_numbered_as_the_container_sees_it(
    case: str, command: str, tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    build, flags, devices, env, split = CASES[case]
    host = FakeHost(tmp_path)
    build(host)
    done = vkrama("--dry-run", command, str(tiny_model), *flags, env=roots(host))
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("podman run ")]
    # bench without --backend plans its default matrix: cpu, then the (vulkan) split, …
    line = next(line for line in lines if "--device" in line) if command == "bench" else lines[0]
    assert command == "bench" or len(lines) == 1
    argv = shlex.split(line)
    seen_devices, seen_groups, seen_env = parse(argv)
    assert seen_devices == devices
    render = [d for d in devices if d.startswith("/dev/")]
    assert seen_groups == ([str(host.render_gid)] if render else [])
    assert {k: v for k, v in seen_env.items() if PINNING.match(k)} == env
    assert split_args(argv) == (split if command == "serve" else bench_split_args(split))


def test_bench_gpu_each_runs_every_gpu_alone_and_the_split_for_each_stack(
    tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path)
    two_nvidia_h100s(host)
    done = vkrama(
        "--dry-run", "bench", str(tiny_model), "--backend", "cuda,vulkan", "--vk-driver", "nvidia",
        "--gpu", "each", "--json", env=roots(host),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    cells = json.loads(done.stdout)
    assert [(c["backend"], c["driver"], c["gpus"]) for c in cells] == [
        ("cuda", None, [0]),
        ("cuda", None, [1]),
        ("cuda", None, [0, 1]),
        ("vulkan", "nvidia", [0]),
        ("vulkan", "nvidia", [1]),
        ("vulkan", "nvidia", [0, 1]),
    ]
    devices = [parse(c["command"])[0] for c in cells]
    assert devices == [[CDI0], [CDI1], [CDI0, CDI1]] * 2
    assert [split_args(c["command"]) for c in cells][2] == ["-sm", "layer"]


def test_bench_gpu_each_default_matrix_on_mixed_vendors_adds_the_mixed_vulkan_cell(
    tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path)
    amd_and_nvidia_desktop(host)
    done = vkrama("--dry-run", "bench", str(tiny_model), "--gpu", "each", "--json", env=roots(host))
    assert done.returncode == 0, done.stderr
    cells = [(c["backend"], c["driver"], c["gpus"]) for c in json.loads(done.stdout)]
    assert cells == [
        ("cpu", None, []),
        ("vulkan", "radv", [0]),
        ("vulkan", "nvidia", [1]),
        ("vulkan", "radv+nvidia", [0, 1]),
        ("rocm", None, [0]),
        ("cuda", None, [1]),
    ]


@pytest.mark.parametrize(
    ("flags", "status", "message"),
    [
        (["--gpu", "0,0"], ExitStatus.USAGE, "--gpu '0,0' names a GPU twice"),
        (["--gpu", "one"], ExitStatus.USAGE, "--gpu 'one' is not a GPU index or list"),
        (["--gpu", "0,5"], ExitStatus.BACKEND_UNAVAILABLE, "no GPU 5: this host has 2 GPUs (0-1)"),
        (["--gpu", "0,1", "--tensor-split", "1,2,3"], ExitStatus.USAGE,
         "--tensor-split has 3 values for 2 GPUs"),
        (["--gpu", "all", "--tensor-split", "a,b"], ExitStatus.USAGE,
         "--tensor-split 'a,b' is not a list of proportions"),
        (["--gpu", "each"], ExitStatus.USAGE, "--gpu 'each' is not a GPU index or list"),
    ],
    ids=["twice", "not-a-number", "no-such-gpu", "split-count", "split-text", "each-on-serve"],
)  # fmt: skip
def test_bad_gpu_lists_are_one_line_errors(
    flags: list[str],
    status: ExitStatus,
    message: str,
    tmp_path: Path,
    tiny_model: Path,
    vkrama: Callable[..., Any],
) -> None:
    host = FakeHost(tmp_path)
    two_amd_gpus(host)
    done = vkrama("--dry-run", "serve", str(tiny_model), *flags, env=roots(host))
    assert done.returncode == status
    assert done.stdout == ""
    assert done.stderr.splitlines()[0] == f"Error: {message}"
    assert "Traceback" not in done.stderr


def test_rocm_refuses_a_split_onto_a_gpu_it_cannot_drive(
    tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path)
    amd_and_nvidia_desktop(host)
    flags = ["--backend", "rocm", "--gpu", "0,1"]
    done = vkrama("--dry-run", "serve", str(tiny_model), *flags, env=roots(host))
    assert done.returncode == ExitStatus.BACKEND_UNAVAILABLE
    assert "GPU 1: not an AMD GPU on amdgpu (NVIDIA on nvidia)" in done.stderr.splitlines()[0]


# ggml's announcements of a split run (format from bench/stderr.py's docstring).
TWO_VULKAN = (
    "ggml_vulkan: Found 2 Vulkan devices:\n"
    "ggml_vulkan: 0 = AMD Radeon RX 7900 XTX (RADV NAVI31) (radv) | uma: 0 | fp16: 1\n"
    "ggml_vulkan: 1 = NVIDIA GeForce RTX 4090 (NVIDIA) | uma: 0 | fp16: 1\n"
)


def test_a_split_cell_counts_only_when_ggml_used_every_gpu_on_the_asked_drivers() -> None:
    seen = stderr.observe(TWO_VULKAN)
    reason, device = stderr.verify("vulkan", "radv+nvidia", seen, ["Vulkan"], gpu_count=2)
    assert reason is None and device is not None
    assert (
        device.label
        == "AMD Radeon RX 7900 XTX (RADV NAVI31) (radv) + NVIDIA GeForce RTX 4090 (NVIDIA)"
    )
    reason, _ = stderr.verify("vulkan", "radv+nvidia", seen, ["Vulkan"], gpu_count=3)
    assert reason == "asked to split over 3 GPUs, but ggml used 2"
    one = stderr.observe(TWO_VULKAN.rsplit("ggml_vulkan: 1", 1)[0])
    reason, _ = stderr.verify("vulkan", "radv+nvidia", one, ["Vulkan"], gpu_count=2)
    assert reason == "asked to split over 2 GPUs, but ggml used 1"


def test_gpu_sets_are_stored_and_the_table_shows_what_the_second_gpu_buys(
    settings: config.Settings,
) -> None:
    alone = [replace(cell("cuda", None, 900, 90), gpus=(i,)) for i in (0, 1)]
    split = replace(cell("cuda", None, 1700, 80), gpus=(0, 1))
    run_id = store_run(settings, *alone, split)
    stored = results.get_run(settings, run_id).cells
    assert [c.gpus for c in stored] == [(0,), (1,), (0, 1)]
    table = report.bench_table(report.rows(run_id, stored)).splitlines()
    assert table[0].split()[:3] == ["backend", "driver", "gpus"]
    assert [line.split()[2] for line in table[2:] if line.startswith("cuda")] == [
        "0", "0", "1", "1", "0,1", "0,1",
    ]  # fmt: skip
    single = report.bench_table(report.rows(run_id, stored[:1])).splitlines()
    assert "gpus" not in single[0]  # one GPU set: nothing to compare, no column


@pytest.mark.parametrize(
    ("build", "said"),
    [
        (amd_and_nvidia_desktop, ["  vulkan/radv+nvidia: GPUs 0,1 (AMD Navi 31"]),
        (intel_igpu_and_amd_dgpu, ["  vulkan/anv+radv: GPUs 0,1 (Intel Raptor Lake-P"]),
        (two_amd_gpus, ["  vulkan/radv: GPUs 0,1 (", "  rocm: GPUs 0,1 ("]),
        (two_nvidia_h100s, ["  vulkan/nvidia: GPUs 0,1 (", "  cuda: GPUs 0,1 ("]),
    ],
    ids=["amd-nvidia", "igpu-dgpu", "two-amd", "two-h100"],
)
def test_devices_explains_which_gpus_each_stack_can_split_over(
    build: Callable[[FakeHost], None], said: list[str], tmp_path: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path)
    build(host)
    done = vkrama("devices", env=roots(host))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    start = lines.index("Splits (one model over several GPUs: --gpu 0,1 or --gpu all):")
    shown = [line for line in lines[start + 1 :] if line.startswith("  ") and ": GPUs" in line]
    assert len(shown) == len(said)
    assert all(line.startswith(prefix) for line, prefix in zip(shown, said, strict=True))
    assert "Vulkan can mix vendors" in done.stdout
    splits = json.loads(vkrama("devices", "--json", env=roots(host)).stdout)["splits"]
    assert [s["gpus"] for s in splits] == [[0, 1]] * len(said)


def test_generated_deployments_carry_the_split(
    tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path / "host")
    two_nvidia_h100s(host)
    flags = ("--backend", "cuda", "--gpu", "all")
    docs = generate(vkrama, host, tiny_model, tmp_path / "kube", "kube", *flags)
    assert isinstance(docs, list)
    (container,) = docs[0]["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2  # the device plugin's two
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert split_args([*container.get("command", []), *container.get("args", [])]) == [
        "--split-mode", "layer",
    ]  # fmt: skip
    text = generate(vkrama, host, tiny_model, tmp_path / "compose", "compose", *flags)
    assert isinstance(text, str)
    (service,) = yaml.safe_load(text)["services"].values()
    assert service["devices"] == [CDI0, CDI1]
