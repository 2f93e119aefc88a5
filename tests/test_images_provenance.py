"""Provenance: what an image recorded at build time, read back without guessing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vkrama.errors import ExitStatus, VkramaError
from vkrama.images.provenance import (
    parse_llama_version,
    parse_provenance_json,
    provenance_from_labels,
    provenance_labels,
    stack_version,
)
from vkrama.images.recipes import containerfiles_dir


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            "version: 0.7.0 (build 11669, commit Debian)",
            ("11669", "Debian"),
            id="debian-build-prints-package-version-then-build-number",
        ),
        pytest.param(
            "version: 11669 (0123abcd)", ("11669", "0123abcd"), id="upstream-build-prints-number"
        ),
        pytest.param("version: 0.7.0 (build 42)", ("42", None), id="build-without-commit"),
        pytest.param("llama-cli: not found", (None, None), id="no-version-line-gives-nothing"),
    ],
)
def test_llama_version_line(line: str, expected: tuple[str | None, str | None]) -> None:
    assert parse_llama_version(line) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '{"backend": "vulkan", "llama_cpp_build": "11669", "mesa": "26.2.6-1"}',
            {"backend": "vulkan", "llama_cpp_build": "11669", "mesa": "26.2.6-1"},
            id="recorded-fields-are-kept",
        ),
        pytest.param(
            '{"backend": "cpu", "llama_cpp_build": "unknown", '
            '"llama_cpp_version": "version: 11669 (abc123)"}',
            {
                "backend": "cpu",
                "llama_cpp_build": "11669",
                "llama_cpp_commit": "abc123",
                "llama_cpp_version": "version: 11669 (abc123)",
            },
            id="build-number-recovered-from-the-raw-version-line",
        ),
        pytest.param(
            '{"backend": "cuda", "cuda": "", "cublas": "unknown", "Bad Key": "x", "n": [1]}',
            {"backend": "cuda"},
            id="empty-unknown-odd-keys-and-non-strings-are-dropped",
        ),
    ],
)
def test_provenance_file(text: str, expected: dict[str, str]) -> None:
    assert parse_provenance_json(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"backend": ', id="truncated-json"),
        pytest.param('["backend"]', id="json-that-is-not-an-object"),
    ],
)
def test_broken_provenance_file_is_a_build_failure(text: str) -> None:
    with pytest.raises(VkramaError) as caught:
        parse_provenance_json(text)
    assert caught.value.status == ExitStatus.BUILD_FAILED
    assert "provenance.json" in caught.value.message


def test_labels_round_trip_and_ignore_foreign_labels() -> None:
    fields = {"backend": "rocm", "hip": "6.4.3-5", "llama_cpp_build": "11669"}
    labels = {**provenance_labels(fields), "io.buildah.version": "1.28.2", "vkrama.role": "serve"}
    assert provenance_from_labels(labels) == fields
    assert provenance_from_labels(None) == {}


@pytest.mark.parametrize(
    ("provenance", "expected"),
    [
        pytest.param({"backend": "vulkan", "mesa": "26.2.6-1"}, "Mesa 26.2.6-1", id="vulkan-mesa"),
        pytest.param(
            {"backend": "cuda", "cuda": "12.4.127", "cublas": "12.4.5.8"},
            "CUDA 12.4.127, cuBLAS 12.4.5.8",
            id="cuda-runtime-and-cublas",
        ),
        pytest.param(
            {"backend": "rocm", "hip": "6.4.3-5", "rocblas": "6.4.4-4"},
            "HIP 6.4.3-5, rocBLAS 6.4.4-4",
            id="rocm-hip-and-rocblas",
        ),
        pytest.param({"backend": "cpu", "ggml_version": "0.27.0-1"}, "ggml 0.27.0-1", id="cpu"),
        pytest.param({"backend": "vulkan"}, "-", id="nothing-recorded-shows-a-dash"),
    ],
)
def test_stack_version(provenance: dict[str, str], expected: str) -> None:
    assert stack_version(provenance) == expected


def _fake_tool(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_provenance_script_reads_dpkg_and_llama_version(tmp_path: Path) -> None:
    """The script the images run at build time, fed fake dpkg-query and llama-cli."""
    version = "version: 0.7.0 (build 11669, commit Debian)"
    _fake_tool(tmp_path, "llama-cli", f'echo "no GPU"\necho "{version}"\necho "built with GNU"\n')
    _fake_tool(
        tmp_path,
        "dpkg-query",
        'for last; do :; done\ncase "$last" in\n'
        "  llama.cpp-tools) echo 'ii  1:0.7.0+dfsg-2';;\n"
        "  libggml0) echo 'ii  0.27.0-1';;\n"
        "  mesa-vulkan-drivers) echo 'un  26.0.0-1'; echo 'ii  26.2.6-1';;\n"
        "esac\n",
    )
    script = containerfiles_dir() / "provenance.sh"
    done = subprocess.run(
        ["sh", str(script), "vulkan", "mesa=mesa-vulkan-drivers", "vulkan_loader=libvulkan1"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"},
        check=True,
    )
    fields = parse_provenance_json(done.stdout)
    assert fields["backend"] == "vulkan"
    assert fields["llama_cpp_build"] == "11669"
    assert fields["llama_cpp_package"] == "1:0.7.0+dfsg-2"
    assert fields["ggml_version"] == "0.27.0-1"
    assert fields["mesa"] == "26.2.6-1"  # the installed one, not the removed one
    assert "vulkan_loader" not in fields  # not installed: absent, not guessed


def test_the_switch_names_a_build_records_are_read_back_from_its_labels() -> None:
    """The names ride in a provenance label; absent (an image built before vkrama recorded
    them) reads as None, which sends tune to the probe; a library reading none as empty."""
    from vkrama.images import library

    names = frozenset({"GGML_VK_FORCE_MMVQ", "GGML_VK_DISABLE_F16"})
    labels = provenance_labels({"backend": "vulkan", library.KEY: library.as_field(names)})
    assert labels["vkrama.image.env_switches"] == "GGML_VK_DISABLE_F16,GGML_VK_FORCE_MMVQ"
    assert library.recorded(provenance_from_labels(labels)) == names
    assert library.recorded({library.KEY: library.as_field(frozenset())}) == frozenset()
    assert library.recorded({"backend": "vulkan"}) is None


def test_recorded_switches_are_read_without_running_the_image_an_older_one_is_probed() -> None:
    from engine_fakes import NullEngine

    from vkrama.engine import ContainerSpec
    from vkrama.engine.records import Completed
    from vkrama.images import library

    recorded = {library.KEY: "GGML_VK_DISABLE_F16"}
    # NullEngine fails the test on any call: a recorded image starts no container.
    assert library.switches_of(NullEngine(), "img", recorded) == {"GGML_VK_DISABLE_F16"}

    class Probed(NullEngine):
        def __init__(self) -> None:
            self.ran: list[str] = []

        def complete(self, spec: ContainerSpec) -> Completed:
            self.ran.append(spec.image)
            return Completed(0, "GGML_VK_FORCE_MMVQ\n", "")

    older = Probed()
    assert library.switches_of(older, "img", {"backend": "vulkan"}) == {"GGML_VK_FORCE_MMVQ"}
    assert older.ran == ["img"]
