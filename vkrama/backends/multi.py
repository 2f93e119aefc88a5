"""One model over several GPUs: `--gpu 0,1|all|each` parsed, and single-GPU choices merged.

Stage: part of HardwareProfile ─► Choice. Pure: reads only the profile and the single-GPU
choices it is given; never looks at the host, never prints. A split choice passes every
chosen GPU's nodes (one CDI name per NVIDIA GPU, each render node, /dev/kfd once) and
numbers the GPUs the way the stack inside the container will see them: only the passed
devices exist there, renumbered from 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from vkrama.backends.cells import Choice, Split
from vkrama.errors import ExitStatus, VkramaError
from vkrama.hardware import Gpu

# What `--gpu` asks for: one index, several in a chosen order, every usable GPU together,
# or (bench only) each GPU alone and then all of them together.
GpuSelection = int | tuple[int, ...] | Literal["all", "each"] | None

GIB = 1024**3
SPLIT_MODES = ("layer", "row", "none")


def parse_gpus(text: str | None, *, allow_each: bool = False) -> GpuSelection:
    """`--gpu` text: "1" ─► 1, "0,1" ─► (0, 1), "all", "each" (bench); bad text: USAGE."""
    if text is None:
        return None
    value = text.strip().lower()
    if value == "all" or (allow_each and value == "each"):
        return value  # type: ignore[return-value]
    parts = [p.strip() for p in value.split(",")]
    if not parts or not all(p.isdigit() for p in parts):
        words = "N, a list N,M, all" + (" or each" if allow_each else "")
        raise VkramaError(
            f"--gpu {text!r} is not a GPU index or list",
            hint=f"--gpu takes {words} (`vkrama devices` lists the indices)",
            status=ExitStatus.USAGE,
        )
    indices = tuple(int(p) for p in parts)
    if len(set(indices)) != len(indices):
        raise VkramaError(
            f"--gpu {text!r} names a GPU twice",
            hint="list each GPU once, in the order llama.cpp should use them",
            status=ExitStatus.USAGE,
        )
    return indices[0] if len(indices) == 1 else indices


def check_split(
    split_mode: str | None, tensor_split: str | None
) -> tuple[str | None, tuple[float, ...]]:
    """--split-mode and --tensor-split text ─► (mode, weights); bad text: USAGE."""
    if split_mode is not None and split_mode not in SPLIT_MODES:
        raise VkramaError(
            f"--split-mode {split_mode!r} is not one of {', '.join(SPLIT_MODES)}",
            status=ExitStatus.USAGE,
        )
    if tensor_split is None:
        return split_mode, ()
    try:
        weights = tuple(float(w) for w in tensor_split.replace("/", ",").split(","))
    except ValueError:
        weights = ()
    if not weights or any(w < 0 for w in weights) or not any(weights):
        raise VkramaError(
            f"--tensor-split {tensor_split!r} is not a list of proportions",
            hint="one number per GPU, in --gpu's order, e.g. --tensor-split 3,1",
            status=ExitStatus.USAGE,
        )
    return split_mode, weights


def merge(
    choices: Sequence[Choice], split_mode: str | None = None, tensor_split: tuple[float, ...] = ()
) -> Choice:
    """Single-GPU choices of one backend (Vulkan: any drivers) ─► one choice over all of them.

    The order of `choices` is the order given; it becomes ggml's device order (the first
    GPU is the main one) and the order of the tensor split."""
    assert len(choices) > 1 and all(c.gpu is not None for c in choices)
    backend = choices[0].backend
    assert all(c.backend == backend for c in choices)
    gpus = tuple(c.gpu for c in choices if c.gpu is not None)
    if tensor_split and len(tensor_split) != len(gpus):
        raise VkramaError(
            f"--tensor-split has {len(tensor_split)} values for {len(gpus)} GPUs",
            hint="one proportion per GPU, in --gpu's order",
            status=ExitStatus.USAGE,
        )
    devices: list[str] = []
    groups: list[str] = []
    env: dict[str, str] = {}
    for choice in choices:
        devices += [d for d in choice.devices if d not in devices]  # /dev/kfd once
        groups += [g for g in choice.group_add if g not in groups]
        env.update(choice.env)
    env.update(_visibility(backend, choices))
    drivers = list(dict.fromkeys(c.driver for c in choices if c.driver))
    reasons = "; ".join(f"GPU {c.gpu.index}: {c.reason}" for c in choices if c.gpu)
    weights = tensor_split or _memory_weights(gpus)
    return Choice(
        backend=backend,
        driver="+".join(drivers) or None,
        gpu=gpus[0],
        devices=tuple(devices),
        group_add=tuple(groups),
        env=env,
        reason=f"split over GPUs {','.join(str(g.index) for g in gpus)}: {reasons}",
        gpus=gpus,
        split=Split(split_mode or "layer", weights),
    )


def _visibility(backend: str, choices: Sequence[Choice]) -> dict[str, str]:
    """The variables that pick and order the GPUs inside the container.

    Inside, only the passed GPUs exist and each stack numbers them from 0 in its own
    enumeration order; the variable lists those numbers in the order given."""
    gpus = [c.gpu for c in choices if c.gpu is not None]
    if backend == "vulkan":
        # The Vulkan loader on Linux sorts physical devices discrete before integrated,
        # then by PCI address, whatever ICD each comes from.
        enumerated = sorted(gpus, key=lambda g: (_integrated(g), g.pci_address, g.index))
        ranks = [enumerated.index(g) for g in gpus]
        icds = [c.env["VK_DRIVER_FILES"] for c in choices if "VK_DRIVER_FILES" in c.env]
        return {
            "VK_DRIVER_FILES": ":".join(dict.fromkeys(icds)),
            "GGML_VK_VISIBLE_DEVICES": _list(ranks),
        }
    ranks = [sorted(gpus, key=lambda g: g.index).index(g) for g in gpus]
    if backend == "cuda":
        # CUDA's default order is fastest first; PCI order is the one CDI's numbering follows.
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": _list(ranks)}
    if backend == "rocm":
        return {"HIP_VISIBLE_DEVICES": _list(ranks)}
    if backend == "oneapi":
        return {"ONEAPI_DEVICE_SELECTOR": f"level_zero:{_list(ranks)}"}
    return {}


def _integrated(gpu: Gpu) -> bool:
    """An AMD APU, or an Intel GPU on the root PCI bus (0000:00:02.0): the CPU's own GPU."""
    return gpu.apu or (gpu.vendor_id == "8086" and gpu.pci_address[5:7] == "00")


def _memory_weights(gpus: Sequence[Gpu]) -> tuple[float, ...]:
    """Proportional to each GPU's memory where the driver says it for every GPU, else ()
    (llama.cpp then splits by the free memory it finds)."""
    sizes = [g.memory_bytes for g in gpus]
    if any(size is None or size <= 0 for size in sizes):
        return ()
    return tuple(round((size or 0) / GIB, 1) for size in sizes)


def _list(numbers: Sequence[int]) -> str:
    return ",".join(str(n) for n in numbers)


def single(choice: Choice, split_mode: str | None, tensor_split: tuple[float, ...]) -> Choice:
    """A one-GPU choice; split flags ask for something only several GPUs can do."""
    if tensor_split and len(tensor_split) != 1:
        raise VkramaError(
            f"--tensor-split has {len(tensor_split)} values for one GPU",
            hint="pick several GPUs with --gpu 0,1 or --gpu all",
            status=ExitStatus.USAGE,
        )
    if split_mode is not None and choice.gpu is not None:
        return replace(choice, split=Split(split_mode, ()))
    return choice
