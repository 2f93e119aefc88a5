"""The Containerfiles as text: lean Debian images with the same llama.cpp (oneapi's with the
SYCL module and Intel runtime its pins name), and the FROM resolution that lets a build fail
fast."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vkrama.config import DEFAULTS
from vkrama.errors import ExitStatus, VkramaError
from vkrama.images import oneapi as wheels
from vkrama.images.recipes import (
    Recipe,
    available,
    containerfiles_dir,
    recipe,
    registry_of,
)

DEBIAN_LLAMA_BUILD = "11669"  # llama.cpp build of Debian sid's 1:0.7.0+dfsg
DEBIAN_BACKENDS = ("cpu", "vulkan", "rocm", "cuda", "oneapi")


def _instructions(backend: str) -> str:
    """The recipe without comments, continuation lines joined."""
    text = recipe(backend).text
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return re.sub(r"\\\n\s*", " ", text)


def test_containerfiles_are_found_in_the_checkout_with_a_recipe_per_backend() -> None:
    assert containerfiles_dir() == Path(__file__).resolve().parent.parent / "containerfiles"
    assert available() == ("cpu", "vulkan", "rocm", "cuda", "oneapi")


def test_unknown_backend_is_a_usage_error() -> None:
    with pytest.raises(VkramaError) as caught:
        recipe("metal")
    assert caught.value.status == ExitStatus.USAGE
    assert "cpu, vulkan, rocm, cuda, oneapi" in (caught.value.hint or "")


@pytest.mark.parametrize("backend", DEBIAN_BACKENDS)
def test_debian_recipe_is_lean_unprivileged_and_records_provenance(backend: str) -> None:
    text = _instructions(backend)
    assert recipe(backend).default_args()["BASE"] == DEFAULTS["images.base"]
    assert "ARG APT_OPTIONS" in text
    assert "apt-get install -y --no-install-recommends" in text
    assert "rm -rf /var/lib/apt/lists/*" in text
    assert "path-exclude=/usr/share/doc/*" in text
    assert "llama.cpp-tools libggml0" in text  # the same llama.cpp build in every image
    assert "useradd --uid 1000" in text and " llama" in text
    assert text.rstrip().splitlines()[-2:] == ["USER llama", "WORKDIR /home/llama"]
    assert f"provenance.sh {backend}" in text
    assert "ENTRYPOINT" not in text and "CMD " not in text


@pytest.mark.parametrize(
    ("backend", "packages"),
    [
        pytest.param(
            "vulkan",
            (
                "libggml0-backend-vulkan",
                "mesa-vulkan-drivers",
                "vulkan-tools",
                "libx11-6",
                "libxext6",
                "libglvnd0",
                "libegl1",
                "libdrm2",
            ),
            id="vulkan-has-mesa-vulkaninfo-and-the-glvnd-egl-path-nvidias-icd-needs",
        ),
        pytest.param("rocm", ("libggml0-backend-hip",), id="rocm-has-the-hip-backend"),
        pytest.param(
            "cuda",
            ("libggml0-backend-cuda", "libcublas12", "libcublaslt12", "contrib non-free"),
            id="cuda-enables-contrib-and-non-free-for-cublas",
        ),
    ],
)
def test_backend_packages(backend: str, packages: tuple[str, ...]) -> None:
    text = _instructions(backend)
    for package in packages:
        assert package in text


# The pins issue 35 names: the 2025.3 runtime the module was built with (libsycl.so.8),
# and the 2026.2 OpenCL CPU runtime.
ONEAPI_PINS = {
    "cyllama-sycl": "0.7.0",
    "intel-sycl-rt": "2025.3.3",
    "intel-cmplr-lib-rt": "2025.3.3",
    "intel-cmplr-lib-ur": "2025.3.3",
    "umf": "1.0.3",
    "tbb": "2023.2.0",
    "tcmlib": "1.6.0",
    "onednn": "2025.3.0",
    "onemkl-sycl-blas": "2025.3.1",
    "mkl": "2025.3.1",
    "intel-opencl-rt": "2026.2.0",
}


def test_oneapi_recipe_is_debians_llama_cpp_with_the_pinned_sycl_module() -> None:
    oneapi = recipe("oneapi")
    text = _instructions("oneapi")
    assert oneapi.base_images() == [DEFAULTS["images.base"]]  # Debian only, no Intel image
    assert "llama.cpp-tools libggml0 libze1 libze-intel-gpu1" in text
    assert "COPY *.whl /build/wheels/" in text  # staged by vkrama: the build fetches nothing
    assert "pip " not in text and "curl " not in text and "wget " not in text
    # Loaded by path, never from ggml's backends0/ (there every run would load it).
    assert "ENV GGML_BACKEND_PATH=/opt/oneapi/ggml/libggml-sycl.so" in text
    assert not [line for line in text.splitlines() if "backends0" in line and "sycl" in line]
    # The RPC module is loaded from there like every image's (the rpc stage, rpc.sh).
    assert "backends0/libggml-rpc.so" in text
    pins = wheels.pinned(oneapi.context / wheels.PINS_NAME)
    assert {w.name: w.version for w in pins} == ONEAPI_PINS
    assert all(w.url.startswith("https://files.pythonhosted.org/") for w in pins)
    assert len({w.sha256 for w in pins}) == len(pins)
    # The pins and the script are part of the recipe: changing either changes its hash.
    assert [p.name for p in oneapi.inputs] == [
        "oneapi.Containerfile", "oneapi-runtime.sh", "oneapi-wheels.txt", "provenance.sh", "rpc.sh",
    ]  # fmt: skip


def test_a_pins_line_without_address_or_hash_is_refused(tmp_path: Path) -> None:
    pins = tmp_path / "x-wheels.txt"
    pins.write_text("# comment\nmkl @ https://h/mkl-1-py3-none-any.whl \\\n    --hash=sha256:" +
                    "a" * 64 + "\nonednn==2025.3.0\n")  # fmt: skip
    with pytest.raises(VkramaError) as caught:
        wheels.pinned(pins)
    assert caught.value.message == (
        "x-wheels.txt line 4: not `name @ https://….whl --hash=sha256:…`"
    )


@pytest.mark.parametrize(
    ("containerfile", "build_args", "expected"),
    [
        pytest.param(
            "ARG BASE=docker.io/library/debian:sid\nFROM ${BASE}\nRUN true\n",
            {},
            ["docker.io/library/debian:sid"],
            id="arg-default-fills-from",
        ),
        pytest.param(
            "ARG BASE=docker.io/library/debian:sid\nFROM $BASE\n",
            {"BASE": "localhost/mydebian:sid"},
            ["localhost/mydebian:sid"],
            id="build-arg-overrides-default",
        ),
        pytest.param(
            "ARG V=1\n# FROM commented:out\nFROM --platform=linux/amd64 img:${V} AS build\n"
            "FROM build\nFROM other:2 as run\nFROM scratch\n",
            {},
            ["img:1", "other:2"],
            id="stages-comments-flags-and-scratch-are-not-bases",
        ),
    ],
)
def test_base_images(
    tmp_path: Path, containerfile: str, build_args: dict[str, str], expected: list[str]
) -> None:
    path = tmp_path / "x.Containerfile"
    path.write_text(containerfile)
    assert Recipe("x", path).base_images(build_args) == expected


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        pytest.param("debian:sid", "docker.io", id="short-name-is-docker-hub"),
        pytest.param("intel/oneapi-basekit:2025", "docker.io", id="org-name-is-docker-hub"),
        pytest.param("docker.io/library/debian:sid", "docker.io", id="explicit-docker-io"),
        pytest.param("quay.io/x/y:1", "quay.io", id="other-registry"),
        pytest.param("localhost/vkrama/cpu:latest", "localhost", id="local-only"),
        pytest.param("127.0.0.1:5000/x:1", "127.0.0.1:5000", id="registry-with-port"),
    ],
)
def test_registry_of(image: str, registry: str) -> None:
    assert registry_of(image) == registry


def test_recipe_hash_covers_the_files_it_copies(tmp_path: Path) -> None:
    (tmp_path / "a.Containerfile").write_text("FROM x\nCOPY p.sh /p.sh\n")
    (tmp_path / "p.sh").write_text("echo 1\n")
    before = Recipe("a", tmp_path / "a.Containerfile").sha256
    (tmp_path / "p.sh").write_text("echo 2\n")
    assert Recipe("a", tmp_path / "a.Containerfile").sha256 != before
