"""scripts/gpu-machine: what can be checked without the GPU.

The raw `podman run` commands are the dry run's own (only --rm and a fresh --name added),
vulkaninfo gets exactly the vulkan/nvidia cell's passthrough, vkrama ÷ raw pairs equal tests,
the 8B model's shape is Llama-3.1-8B's, run.sh parses, refuses unknown stages before it
touches anything, and the README runs the stages run.sh has.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fakesys import FakeHost, nvidia_cdi_spec

REPO = Path(__file__).resolve().parent.parent
GPU = REPO / "scripts" / "gpu-machine"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, GPU / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


raw_runs = _load("raw")
shapes = _load("shapes")
IMAGE = "localhost/vkrama/vulkan:latest"
VULKAN = [
    "podman", "run", "--name", "vkrama-bench-ab12cd34-1-vulkan-nvidia",
    "--label", "vkrama.device=NVIDIA 10de:2330", "--cap-drop", "all",
    "--device", "nvidia.com/gpu=0",
    "--env", "NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics",
    "--env", "VK_DRIVER_FILES=/usr/share/vulkan/icd.d/nvidia_icd.json",
    "--mount", "type=bind,src=/m/7b.gguf,dst=/models/7b.gguf,ro",
    "--mount", "type=bind,src=/home/cache/mesa,dst=/cache/mesa",
    IMAGE, "llama-bench", "-m", "/models/7b.gguf", "-fa", "on", "-o", "json",
]  # fmt: skip
DRY = [
    {"backend": "cuda", "driver": None, "command": ["podman", "run", "--name", "c", "x"]},
    {"backend": "vulkan", "driver": "nvidia", "command": VULKAN},
]


def test_vulkaninfo_runs_with_exactly_the_cells_passthrough() -> None:
    argv = raw_runs.cell_argv(DRY, "vulkan/nvidia", ["vulkaninfo", "--summary"])
    image = VULKAN.index(IMAGE)
    assert argv[:3] == ["podman", "run", "--rm"]
    assert argv[3:5] == ["--name", argv[4]] and argv[4].startswith(VULKAN[3] + "-raw-")
    assert argv[5 : image + 2] == VULKAN[4 : image + 1]  # every flag, in order, and the image
    assert argv[image + 2 :] == ["vulkaninfo", "--summary"]


def test_the_raw_bench_is_the_dry_run_command_itself() -> None:
    argv = raw_runs.cell_argv(DRY, "vulkan/nvidia")
    assert [a for a in argv if a != "--rm" and not a.startswith(VULKAN[3])] == [
        a for a in VULKAN if a != VULKAN[3]
    ]
    assert raw_runs.bind_sources(argv) == [Path("/m/7b.gguf"), Path("/home/cache/mesa")]


def test_a_cell_the_dry_run_lacks_is_refused() -> None:
    with pytest.raises(SystemExit, match="no vulkan/radv cell"):
        raw_runs.cell_argv(DRY, "vulkan/radv")


def test_ratio_pairs_vkramas_rows_with_the_raw_runs_tests() -> None:
    rows = [
        {"backend": "cuda", "driver": None, "test": t, "tps": tps, "status": "ok"}
        for t, tps in (("pp512 fa=off", 11000.0), ("pp512 fa=on", 11841.0), ("tg128 fa=on", 290.8))
    ] + [
        {
            "backend": "vulkan",
            "driver": "nvidia",
            "test": "tg128 fa=on",
            "tps": 0,
            "status": "failed",
        }
    ]
    raw = {
        "cell": "cuda",
        "llama_bench": [
            {"n_prompt": 512, "n_gen": 0, "flash_attn": 1, "avg_ts": 11900.0, "stddev_ts": 1.0},
            {"n_prompt": 0, "n_gen": 128, "flash_attn": 1, "avg_ts": 290.0, "stddev_ts": 1.0},
        ],
    }
    failed_raw = {"cell": "vulkan/nvidia", "llama_bench": raw["llama_bench"]}
    found = raw_runs.ratios(rows, [raw, failed_raw])
    assert [(r["cell"], r["test"], r["ratio"]) for r in found] == [
        ("cuda", "pp512 fa=on", round(11841 / 11900, 4)),
        ("cuda", "tg128 fa=on", round(290.8 / 290.0, 4)),
    ]


def test_the_8b_model_has_llama_3_1_8bs_shape_and_vocabulary() -> None:
    sys.path.insert(0, str(REPO / "examples"))
    import examplemodel

    fields, quantization = shapes.MODELS["8b"]
    shape = examplemodel.Shape(*fields)
    assert (shape.n_embd, shape.n_layer, shape.n_ff, shape.n_head, shape.n_head_kv) == (
        4096, 32, 14336, 32, 8,
    )  # fmt: skip
    assert shape.n_vocab == 128256 and quantization == "q4_k_m"
    assert round(shape.parameter_count / 1e9, 2) == 8.03  # Llama-3.1-8B: 8.03 B
    tokens, _, _ = examplemodel.vocabulary(shape.n_vocab)
    assert len(tokens) == len(set(tokens)) == 128256
    assert examplemodel.vocabulary(1024)[0] == examplemodel.vocabulary(40000)[0][:1024]


def test_a_capped_random_pool_still_fills_a_bigger_tensor(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "examples"))
    import examplemodel
    from gguf import GGUFReader

    shape = examplemodel.Shape("capped", 64, 1, 4, 2, 128, 1024, 256)
    path = examplemodel.write(tmp_path / "capped.gguf", shape, pool_elements=5000)
    tensors = {t.name: t for t in GGUFReader(path).tensors}
    embd = tensors["token_embd.weight"]
    assert embd.n_elements == 1024 * 64 > 5000
    assert float(abs(embd.data.astype("float32")).max()) > 0  # random, not zeros


STAGES = (
    "diag vulkaninfo model bench fidelity depths energy check tune joules chats closed-loop sweep"
    " rpc"
)


@pytest.mark.parametrize(
    "args",
    [("issue17a",), ("bench:7b", "issue28"), ()],
    ids=["a-stage-named-after-an-issue", "one-unknown-among-known-ones", "no-stage"],
)
def test_run_sh_refuses_unknown_stages_before_it_touches_anything(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    assert subprocess.run(["bash", "-n", str(GPU / "run.sh")], check=False).returncode == 0
    done = subprocess.run(
        ["bash", str(GPU / "run.sh"), *args], capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out")},
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.endswith(f"(stages: {STAGES})\n")
    assert not (tmp_path / "out").exists()  # nothing made, not even $OUT


def test_every_stage_the_readme_runs_is_one_run_sh_has() -> None:
    text = (GPU / "README.md").read_text()
    runs = re.findall(r"run\.sh((?: [a-z-]+(?::[0-9a-z]+)?)+)", text)
    assert len(runs) >= 3
    for stage in (s.split(":")[0] for found in runs for s in found.split()):
        assert stage in STAGES.split(), stage
    assert "issue" not in text.lower()  # readable without the issue history
    assert "fetch.sh cuda vulkan" in text and ".gpu-carry/vulkan.LAST" in text


def test_the_dry_run_of_the_h100_bench_gives_vulkaninfo_the_cdi_device_and_icd(
    tmp_path: Path, vkrama: Callable[..., Any], tiny_model: Path
) -> None:
    """The plan's first step on a fake H100 host whose CDI spec nvidia_cdi.py wrote."""
    host = FakeHost(tmp_path / "fake")
    host.add_gpu("0000:00:05.0", "10de", "2330", "nvidia", pci_class="0x030200")
    host.add_nvidia_nodes(1)
    host.add_cdi_spec(nvidia_cdi_spec())
    env = {
        "VKRAMA_HARDWARE_SYSFS_ROOT": str(host.sysfs),
        "VKRAMA_HARDWARE_DEV_ROOT": str(host.dev),
        "VKRAMA_HARDWARE_CDI_DIRS": str(host.cdi),
        "VKRAMA_HARDWARE_PCI_IDS": str(host.pci_ids),
    }
    done = vkrama("--dry-run", "bench", str(tiny_model), "--backend", "cuda,vulkan",
                  "--vk-driver", "nvidia", "--fa", "1", "--json", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    dry = json.loads(done.stdout)
    assert [(c["backend"], c["driver"]) for c in dry] == [("cuda", None), ("vulkan", "nvidia")]
    argv = raw_runs.cell_argv(dry, "vulkan/nvidia", ["vulkaninfo", "--summary"])
    assert argv[-3:] == ["localhost/vkrama/vulkan:latest", "vulkaninfo", "--summary"]
    flags = list(itertools.pairwise(argv))
    assert ("--device", "nvidia.com/gpu=0") in flags
    assert ("--env", "VK_DRIVER_FILES=/usr/share/vulkan/icd.d/nvidia_icd.json") in flags
    assert ("--env", "NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics") in flags
    raw = raw_runs.cell_argv(dry, "cuda")
    assert raw[-2:] == ["-o", "json"] and "-fa" in raw and "llama-bench" in raw


def test_the_caches_a_dry_run_mounts_are_made_before_the_raw_commands_run(tmp_path: Path) -> None:
    cache, model = tmp_path / "home" / "cache" / "mesa", tmp_path / "7b.gguf"
    argv = ["podman", "run", "--mount", f"type=bind,src={model},dst=/models/7b.gguf,ro",
            "--mount", f"type=bind,src={cache},dst=/cache/mesa", IMAGE, "true"]  # fmt: skip
    raw_runs.make_caches(argv)
    assert cache.is_dir() and cache.stat().st_mode & 0o777 == 0o777
    assert not model.exists()  # the model is a file vkrama found, never made here
