"""bench.matrix and HardwareProfile.gpu_key on real `backends` over given hardware profiles."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_fakes import NullEngine
from fakesys import FakeHost, amd_dgpu_with_kfd
from test_devices_cli import roots

from vkrama import config, images, results
from vkrama.bench.matrix import BenchRequest, matrix
from vkrama.bench.session import prepare
from vkrama.errors import ExitStatus, VkramaError
from vkrama.hardware import Gpu, HardwareProfile


def profile(*gpus: Gpu) -> HardwareProfile:
    return HardwareProfile(
        gpus=gpus, nodes=(), kfd=None, nvidia_nodes=(), cdi_specs=(), pci_ids=None
    )


def gpu(index: int, vendor: str, device: str) -> Gpu:
    return Gpu(index, vendor, device, "amdgpu", f"0000:0{index}:00.0", "GPU", None, None, None)


NO_GPU = profile()

MATRIX = [
    ("nothing-asked-means-every-usable-cell", {}, ["cpu", "vulkan/lavapipe"], []),
    ("all-flag-means-every-usable-cell", {"every": True},
     ["cpu", "vulkan/lavapipe", "oneapi/opencl-cpu"], []),
    ("sycl-cpu-device-is-run-when-oneapi-is-named", {"backends": ("cpu", "oneapi")},
     ["cpu", "oneapi/opencl-cpu"], []),
    ("backend-list-is-taken-in-order", {"backends": ("vulkan", "cpu"), "vk_drivers": ("lavapipe",)},
     ["vulkan/lavapipe", "cpu"], []),
    ("driver-list-alone-means-vulkan", {"vk_drivers": ("lavapipe",)}, ["vulkan/lavapipe"], []),
    ("unavailable-backends-are-unavailable-cells", {"backends": ("cpu", "rocm", "cuda")}, ["cpu"],
     ["rocm", "cuda"]),
    ("unavailable-driver-is-an-unavailable-cell", {"vk_drivers": ("lavapipe", "radv")},
     ["vulkan/lavapipe"], ["vulkan/radv"]),
    ("all-with-driver-filter-keeps-cpu-and-the-sycl-cpu-device",
     {"every": True, "vk_drivers": ("radv",)}, ["cpu", "oneapi/opencl-cpu"], []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("asked", "cells", "failed"), [m[1:] for m in MATRIX], ids=[m[0] for m in MATRIX]
)
def test_matrix_on_a_host_without_gpu(
    asked: dict[str, object], cells: list[str], failed: list[str]
) -> None:
    choices, unavailable = matrix(NO_GPU, BenchRequest("m", **asked))  # type: ignore[arg-type]
    assert [c.cell for c in choices] == cells
    assert [f"{u.backend}/{u.driver}" if u.driver else u.backend for u in unavailable] == failed
    assert {u.status for u in unavailable} <= {results.CellStatus.UNAVAILABLE}
    assert all(u.reason and not u.reason.startswith("unavailable") for u in unavailable)


@pytest.mark.parametrize(
    "asked",
    [{"backends": ("metal",)}, {"vk_drivers": ("moltenvk",)}],
    ids=["unknown-backend", "unknown-vulkan-driver"],
)
def test_unknown_names_are_usage_errors(asked: dict[str, object]) -> None:
    with pytest.raises(VkramaError) as caught:
        matrix(NO_GPU, BenchRequest("m", **asked))  # type: ignore[arg-type]
    assert caught.value.status == ExitStatus.USAGE and "one of" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("gpus", "index", "key"),
    [
        ((), None, "none"),
        ((gpu(0, "1002", "744c"),), None, "1002:744c"),
        ((gpu(0, "1002", "744c"), gpu(1, "8086", "a7a0")), 1, "8086:a7a0"),
        ((gpu(0, "1002", "744c"), gpu(1, "8086", "a7a0")), None, "1002:744c+8086:a7a0"),
    ],
    ids=["no-gpu", "one-gpu", "chosen-gpu-of-two", "the-set-of-two"],
)
def test_gpu_key(gpus: tuple[Gpu, ...], index: int | None, key: str) -> None:
    assert profile(*gpus).gpu_key(index) == key


AMD_MATRIX = [
    ("default-skips-lavapipe-when-a-gpu-is-usable", {}, ["cpu", "vulkan/radv", "rocm"]),
    ("all-keeps-lavapipe-and-the-sycl-cpu-device", {"every": True},
     ["cpu", "vulkan/lavapipe", "oneapi/opencl-cpu", "vulkan/radv", "rocm"]),
    ("the-seed-question-vulkan-against-rocm", {"backends": ("vulkan", "rocm")},
     ["vulkan/radv", "rocm"]),
    ("drivers-side-by-side", {"vk_drivers": ("radv", "lavapipe")},
     ["vulkan/radv", "vulkan/lavapipe"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("asked", "cells"), [m[1:] for m in AMD_MATRIX], ids=[m[0] for m in AMD_MATRIX]
)
def test_matrix_on_an_amd_desktop(
    tmp_path: Path, asked: dict[str, object], cells: list[str]
) -> None:
    host = FakeHost(tmp_path)
    amd_dgpu_with_kfd(host)
    choices, unavailable = matrix(host.detect(), BenchRequest("m", **asked))  # type: ignore[arg-type]
    assert [c.cell for c in choices] == cells and unavailable == []


def fake_ensure(broken: set[str]) -> object:
    def ensure(
        _engine: object,
        backend: str,
        _settings: object,
        on_progress: object = None,
        gfx: tuple[str, ...] = (),
    ) -> images.ImageRef:
        if backend in broken:
            raise VkramaError(
                f"image {images.image_ref(backend)} is not built",
                hint=f"`vkrama images build {backend}`",
                status=ExitStatus.IMAGE_UNAVAILABLE,
            )
        return images.ImageRef(backend, images.image_ref(backend), f"sha256:{backend}", {})

    return ensure


def test_a_backend_whose_image_is_missing_becomes_an_unavailable_cell(
    monkeypatch: pytest.MonkeyPatch, tiny_model: Path, settings: config.Settings
) -> None:
    monkeypatch.setattr(images, "ensure", fake_ensure({"vulkan"}))
    request = BenchRequest(str(tiny_model), backends=("vulkan", "cpu"), vk_drivers=("lavapipe",))
    planned = prepare(settings, request, engine=NullEngine())
    assert [c.key for c in planned.cells] == ["cpu"]
    assert planned.images == {"localhost/vkrama/cpu:latest": ("sha256:cpu", {})}
    assert [(u.backend, u.status, u.reason) for u in planned.unavailable] == [
        (
            "vulkan",
            results.CellStatus.UNAVAILABLE,
            "image localhost/vkrama/vulkan:latest is not built",
        )
    ]


def test_nothing_to_bench_because_of_images_says_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, tiny_model: Path, settings: config.Settings
) -> None:
    monkeypatch.setattr(images, "ensure", fake_ensure({"cpu", "vulkan"}))
    with pytest.raises(VkramaError) as caught:
        prepare(settings, BenchRequest(str(tiny_model)), engine=NullEngine())
    assert caught.value.status == ExitStatus.IMAGE_UNAVAILABLE
    assert caught.value.hint == "`vkrama images build cpu`"


def test_an_unavailable_cell_keeps_the_reason_alone() -> None:
    """Its status says "unavailable"; the reason does not say it again."""
    _, unavailable = matrix(NO_GPU, BenchRequest("m", backends=("rocm",), vk_drivers=()))
    assert [(u.backend, u.reason) for u in unavailable] == [("rocm", "no AMD GPU, no /dev/kfd")]


def test_nothing_to_bench_names_the_backend_and_why(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = FakeHost(tmp_path)  # no GPU
    for key, value in roots(host).items():
        monkeypatch.setenv(key, value)
    request = BenchRequest(str(tiny_model), backends=("vulkan",), vk_drivers=("radv",))
    with pytest.raises(VkramaError) as caught:
        prepare(config.load(), request, engine=NullEngine())
    assert caught.value.status == ExitStatus.BACKEND_UNAVAILABLE
    assert caught.value.message == (
        "nothing to bench: vulkan/radv is unavailable here: no GPU on amdgpu for radv"
    )
