"""AMD's newest GPUs on fake hosts laid out as Linux lays them out: an RX 9070 XT (gfx1201),
a Strix Halo APU (gfx1151) and an 8× MI300X server (gfx942). Each gets /dev/kfd plus its
one render node, RADV beside ROCm, the ROCm 7 image where Debian's ROCm 6.4 build lacks
its gfx, and a refusal with the exact build command when the built image lacks it."""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakesys import (
    GIB,
    FakeHost,
    amd_dgpu_with_kfd,
    mi300x_server,
    rx_9070_xt,
    strix_halo,
)
from test_devices_cli import roots

from vkrama.backends import ROCM7_TARGETS, choose, usable
from vkrama.errors import ExitStatus, VkramaError
from vkrama.images import rocm

RADV = "/usr/share/vulkan/icd.d/radeon_icd.json"


def detect(tmp_path: Path, build: Callable[[FakeHost], None]) -> tuple[FakeHost, Any]:
    host = FakeHost(tmp_path)
    build(host)
    return host, host.detect()


def podman_runs(stdout: str) -> list[list[str]]:
    return [shlex.split(line) for line in stdout.splitlines() if line.startswith("podman run ")]


def flag_values(argv: list[str], flag: str) -> list[str]:
    return [value for name, value in itertools.pairwise(argv) if name == flag]


HOSTS = {
    "rx-9070-xt-gfx1201": (rx_9070_xt, "gfx1201", "AMD Navi 48 [Radeon RX 9070/9070 XT/9070 GRE]"),
    "strix-halo-gfx1151": (
        strix_halo,
        "gfx1151",
        "AMD Strix Halo [Radeon Graphics / Radeon 8050S / 8060S Graphics]",
    ),
    "mi300x-gfx942": (mi300x_server, "gfx942", "AMD Aqua Vanjaram [Instinct MI300X]"),
}


@pytest.mark.parametrize("case", list(HOSTS))
def test_each_new_gpu_offers_radv_and_rocm7_with_kfd_and_its_one_render_node(
    case: str, tmp_path: Path
) -> None:
    build, gfx, name = HOSTS[case]
    _, profile = detect(tmp_path, build)
    gpu = profile.gpus[0]
    assert (gpu.gfx_target, gpu.name) == (gfx, name)
    cells = [(c.cell, c.gpu.index if c.gpu else None) for c in usable(profile)]
    assert ("vulkan/radv", 0) in cells and ("rocm", 0) in cells
    choice = choose(profile, "rocm", 0)
    assert choice.devices == ("/dev/dri/renderD128", "/dev/kfd")
    assert choice.env == {"HIP_VISIBLE_DEVICES": "0"}
    assert choice.reason == (
        f"amdgpu, /dev/kfd and {gfx}: not in Debian's ROCm 6.4 HIP build, so the rocm image "
        f"is llama.cpp compiled with ROCm 7.2.4 for {gfx}"
    )


def test_the_rx_7900_xtx_host_keeps_debians_rocm_build(tmp_path: Path) -> None:
    _, profile = detect(tmp_path, amd_dgpu_with_kfd)
    assert choose(profile, "rocm").reason == (
        "amdgpu, /dev/kfd and gfx1100, which Debian's HIP build supports"
    )
    assert rocm.recipe_for(rocm.host_targets(profile), asked=False) == "rocm"


def test_strix_halo_is_an_apu_whose_memory_is_gtt_not_its_vram_carve_out(
    tmp_path: Path, vkrama: Callable[..., Any]
) -> None:
    host, profile = detect(tmp_path, strix_halo)
    (gpu,) = profile.gpus
    assert gpu.apu and gpu.vram_bytes == 512 * 1024**2 and gpu.gtt_bytes == 96 * GIB
    assert gpu.memory_bytes == 512 * 1024**2 + 96 * GIB
    done = vkrama("devices", env=roots(host))
    assert done.returncode == 0, done.stderr
    assert "0.5 GiB + 96.0 GiB GTT (APU)" in done.stdout


def test_a_discrete_card_counts_only_its_vram(tmp_path: Path) -> None:
    _, profile = detect(tmp_path, rx_9070_xt)
    (gpu,) = profile.gpus
    assert not gpu.apu and gpu.memory_bytes == 16 * GIB


def strix_halo_with_rx_9070_xt(host: FakeHost) -> None:
    """A Strix Halo box with an RX 9070 XT in its PCIe slot (one /dev/kfd for both)."""
    host.add_gpu("0000:03:00.0", "1002", "7550", "amdgpu", render_minor=129, card=1,
                 vram=16 * GIB, gtt=31 * GIB, gfx_target_version=120001)  # fmt: skip
    strix_halo(host)


def test_a_split_weighs_the_apu_by_its_gtt_and_vulkan_counts_it_after_the_discrete_card(
    tmp_path: Path,
) -> None:
    _, profile = detect(tmp_path, strix_halo_with_rx_9070_xt)
    halo = next(g for g in profile.gpus if g.apu)
    card = next(g for g in profile.gpus if not g.apu)
    split = choose(profile, "rocm", (halo.index, card.index))
    assert split.split is not None and split.split.weights == (96.5, 16.0)
    vulkan = choose(profile, "vulkan", (halo.index, card.index))
    # The Vulkan loader lists discrete GPUs before integrated ones: the APU is device 1.
    assert vulkan.env["GGML_VK_VISIBLE_DEVICES"] == "1,0"


def test_mi300x_server_has_eight_gpus_each_its_own_kfd_node_and_render_node(
    tmp_path: Path,
) -> None:
    _, profile = detect(tmp_path, mi300x_server)
    assert [g.render_node for g in profile.gpus] == [f"/dev/dri/renderD{128 + n}" for n in range(8)]
    assert {g.gfx_target for g in profile.gpus} == {"gfx942"}
    assert choose(profile, "rocm", 3).devices == ("/dev/dri/renderD131", "/dev/kfd")
    split = choose(profile, "rocm", (2, 5))
    assert sorted(split.devices) == ["/dev/dri/renderD130", "/dev/dri/renderD133", "/dev/kfd"]
    assert split.env == {"HIP_VISIBLE_DEVICES": "0,1"}
    assert split.split is not None and split.split.weights == (192.0, 192.0)


@pytest.mark.parametrize("command", ["serve", "bench"])
@pytest.mark.parametrize("case", list(HOSTS))
def test_dry_run_passes_kfd_and_the_one_render_node(
    case: str, command: str, tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    build, _, _ = HOSTS[case]
    host = FakeHost(tmp_path)
    build(host)
    gpu = ["--gpu", "7"] if build is mi300x_server else []
    done = vkrama("--dry-run", command, str(tiny_model), "--backend", "rocm", *gpu, env=roots(host))
    assert done.returncode == 0, done.stderr
    (argv,) = podman_runs(done.stdout)
    node = "/dev/dri/renderD135" if gpu else "/dev/dri/renderD128"
    assert flag_values(argv, "--device") == [node, "/dev/kfd"]
    assert flag_values(argv, "--group-add") == [str(host.render_gid)]
    assert "HIP_VISIBLE_DEVICES=0" in flag_values(argv, "--env")


@pytest.mark.parametrize("case", ["rx-9070-xt-gfx1201", "strix-halo-gfx1151"])
def test_bench_all_runs_radv_and_rocm_side_by_side(
    case: str, tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    build, _, _ = HOSTS[case]
    host = FakeHost(tmp_path)
    build(host)
    done = vkrama("--dry-run", "bench", str(tiny_model), "--all", env=roots(host))
    assert done.returncode == 0, done.stderr
    runs = podman_runs(done.stdout)
    images = [next(a for a in argv if a.startswith("localhost/vkrama/")) for argv in runs]
    assert "localhost/vkrama/rocm:latest" in images
    radv = [argv for argv in runs if f"VK_DRIVER_FILES={RADV}" in flag_values(argv, "--env")]
    assert len(radv) == 1
    assert flag_values(radv[0], "--device") == ["/dev/dri/renderD128"]


# -- which recipe `vkrama images build rocm` builds, for which targets --------------------------


@pytest.mark.parametrize(
    ("build", "flags", "recipe", "targets"),
    [
        (rx_9070_xt, [], "rocm7.Containerfile", "gfx1201"),
        (strix_halo, [], "rocm7.Containerfile", "gfx1151"),
        (mi300x_server, [], "rocm7.Containerfile", "gfx942"),
        (amd_dgpu_with_kfd, [], "rocm.Containerfile", None),
        (amd_dgpu_with_kfd, ["--gfx", "gfx1201,gfx1151"], "rocm7.Containerfile", "gfx1151;gfx1201"),
        (amd_dgpu_with_kfd, ["--gfx", "all"], "rocm7.Containerfile", ";".join(ROCM7_TARGETS)),
    ],
    ids=[
        "rx-9070-xt-host-compiles-rocm7-for-gfx1201",
        "strix-halo-host-compiles-rocm7-for-gfx1151",
        "mi300x-host-compiles-rocm7-for-gfx942-once",
        "rx-7900-xtx-host-keeps-debians-rocm-image",
        "gfx-list-compiles-those-targets-in-rocms-order",
        "gfx-all-compiles-every-target-rocblas-has",
    ],
)
def test_images_build_rocm_picks_the_recipe_and_targets(
    build: Callable[[FakeHost], None],
    flags: list[str],
    recipe: str,
    targets: str | None,
    tmp_path: Path,
    vkrama: Callable[..., Any],
) -> None:
    host = FakeHost(tmp_path)
    build(host)
    done = vkrama("--dry-run", "images", "build", "rocm", *flags, env=roots(host))
    assert done.returncode == 0, done.stderr
    # The build command comes last, after the lines that stage its context.
    argv = shlex.split(done.stdout.splitlines()[-1])
    assert Path(argv[argv.index("-f") + 1]).name == recipe
    args = dict(a.split("=", 1) for a in flag_values(argv, "--build-arg"))
    assert args.get("GFX_TARGETS") == targets
    if targets:
        assert args["LLAMA_CPP_BUILD"] == "11434"
        # The context vkrama assembles holds the recipe and the source tarball.
        assert Path(argv[-1]).name == "rocm7" and "cache" in Path(argv[-1]).parts


def test_an_unknown_gfx_is_a_usage_error_naming_the_targets(vkrama: Callable[..., Any]) -> None:
    done = vkrama("--dry-run", "images", "build", "rocm", "--gfx", "gfx1150")
    assert done.returncode == ExitStatus.USAGE
    first, hint = done.stderr.splitlines()
    assert (
        first
        == "Error: --gfx 'gfx1150': gfx1150 is not a target ROCm 7.2.4's rocBLAS has kernels for"
    )
    assert hint.startswith("Hint: one or more of gfx803, ") and hint.endswith("gfx1201, or all")


# -- a built image that lacks the GPU's gfx ------------------------------------------------------

ROCM7_FOR_GFX1100 = {
    "backend": "rocm",
    "hip": "7.2.4-1~exp2",
    "llama_cpp_build": "11434",
    "gfx_targets": "gfx1100",
}
DEBIAN_ROCM = {"backend": "rocm", "hip": "6.4.3-2", "llama_cpp_build": "11669"}


@pytest.mark.parametrize(
    ("provenance", "gfx", "message", "hint"),
    [
        (ROCM7_FOR_GFX1100, ("gfx1201",),
         "rocm cannot use gfx1201: the rocm image (HIP 7.2.4-1~exp2, llama.cpp 11434, gfx1100) "
         "is not compiled for it",
         "`vkrama images build rocm --gfx gfx1100,gfx1201` compiles llama.cpp with ROCm 7.2.4 "
         "for it"),
        (DEBIAN_ROCM, ("gfx1151",),
         "rocm cannot use gfx1151: the rocm image (HIP 6.4.3-2, llama.cpp 11669, Debian's "
         "gfx803…gfx1102) is not compiled for it",
         "`vkrama images build rocm --gfx gfx1151` compiles llama.cpp with ROCm 7.2.4 for it"),
        (DEBIAN_ROCM, ("gfx1150",),
         "rocm cannot use gfx1150: the rocm image (HIP 6.4.3-2, llama.cpp 11669, Debian's "
         "gfx803…gfx1102) is not compiled for it",
         "ROCm 7.2.4's rocBLAS has no kernels for gfx1150: use vulkan (RADV)"),
    ],
    ids=["rocm7-image-for-gfx1100-refuses-gfx1201-and-keeps-both-in-the-fix",
         "debian-image-refuses-strix-halo-and-names-the-rocm7-build",
         "a-gfx-no-rocm-serves-points-at-radv"],
)  # fmt: skip
def test_an_image_without_the_gpus_gfx_makes_rocm_unusable_with_the_fix(
    provenance: dict[str, str], gfx: tuple[str, ...], message: str, hint: str
) -> None:
    with pytest.raises(VkramaError) as caught:
        rocm.check_targets(provenance, gfx)
    assert caught.value.status == ExitStatus.BACKEND_UNAVAILABLE
    assert (caught.value.message, caught.value.hint) == (message, hint)


@pytest.mark.parametrize(
    ("provenance", "gfx"),
    [(ROCM7_FOR_GFX1100, ("gfx1100",)), (DEBIAN_ROCM, ("gfx1030", "gfx1100")), (DEBIAN_ROCM, ())],
    ids=["rocm7-image-serves-its-target", "debian-image-serves-rdna2-and-rdna3", "cpu-only-cell"],
)
def test_an_image_with_the_gpus_gfx_passes(
    provenance: dict[str, str], gfx: tuple[str, ...]
) -> None:
    rocm.check_targets(provenance, gfx)


def test_ensure_refuses_a_built_debian_rocm_image_for_an_rx_9070_xt(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """What `vkrama bench`/`serve` meet on an RX 9070 XT host whose rocm image is sid's."""
    import vkrama.images as images
    from vkrama.images import local

    built = images.ImageRef("rocm", images.image_ref("rocm"), "sha256:debian", DEBIAN_ROCM)
    monkeypatch.setattr(local, "built", lambda *_args: built)
    with pytest.raises(VkramaError) as caught:
        images.ensure(object(), "rocm", settings, gfx=("gfx1201",))  # type: ignore[arg-type]
    assert caught.value.status == ExitStatus.BACKEND_UNAVAILABLE
    assert caught.value.hint == (
        "`vkrama images build rocm --gfx gfx1201` compiles llama.cpp with ROCm 7.2.4 for it"
    )
    assert images.ensure(object(), "rocm", settings, gfx=("gfx1100",)) is built  # type: ignore[arg-type]
