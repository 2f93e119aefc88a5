"""The Containerfiles as text: lean Debian images with the same llama.cpp, the oneapi
recipe to upstream's shape, and the FROM resolution that lets a build fail fast."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vkrama.config import DEFAULTS
from vkrama.errors import ExitStatus, VkramaError
from vkrama.images.recipes import (
    Recipe,
    available,
    containerfiles_dir,
    recipe,
    registry_of,
)

DEBIAN_LLAMA_BUILD = "11669"  # llama.cpp build of Debian sid's 1:0.7.0+dfsg
DEBIAN_BACKENDS = ("cpu", "vulkan", "rocm", "cuda")


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


def test_oneapi_recipe_follows_upstream_at_debians_llama_cpp_build() -> None:
    oneapi = recipe("oneapi")
    text = _instructions("oneapi")
    args = oneapi.default_args()
    assert args["BASE"].startswith("docker.io/intel/oneapi-basekit:")
    assert f"ARG LLAMA_CPP_TAG=b{DEBIAN_LLAMA_BUILD}" in text
    assert (
        'git clone --depth 1 --branch "${LLAMA_CPP_TAG}" https://github.com/ggml-org/llama.cpp'
        in text
    )
    assert "-DGGML_SYCL=ON" in text
    assert "-DCMAKE_C_COMPILER=icx -DCMAKE_CXX_COMPILER=icpx" in text
    assert "COPY --from=build /staging/usr/local/ /usr/local/" in text
    assert "useradd --uid 1000" in text
    assert text.rstrip().splitlines()[-2:] == ["USER llama", "WORKDIR /home/llama"]
    assert "provenance.sh oneapi" in text
    assert "ENTRYPOINT" not in text
    assert oneapi.base_images() == [args["BASE"]]  # the build stage is not a base
    assert oneapi.base_description == "Intel's oneAPI base kit image"


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
