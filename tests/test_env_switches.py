"""Each backend's own environment switches: the table's names are in the real image's
library, and the probe that finds them tells one image from another."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vkrama.backends import env_switches
from vkrama.engine import Engine
from vkrama.images import library


def test_every_switch_belongs_to_a_backend_and_carries_a_searched_prefix() -> None:
    assert len(env_switches.BY_NAME) == len(env_switches.SWITCHES)  # no name twice
    for switch in env_switches.SWITCHES:
        assert switch.name.startswith(env_switches.PREFIXES), switch.name
        assert switch.backend in ("vulkan", "cuda", "rocm") and switch.values


def test_the_probe_output_is_read_as_names_only() -> None:
    printed = "GGML_VK_DISABLE_F16\nGGML_VK_FORCE_MMVQ\n\nnot a name\n"
    assert library.parse(printed) == {"GGML_VK_DISABLE_F16", "GGML_VK_FORCE_MMVQ"}


@pytest.mark.podman
@pytest.mark.slow
def test_the_vulkan_images_ggml_reads_every_vulkan_switch_and_the_cpu_image_none(
    engine: Engine, backend_image: Callable[[str], str]
) -> None:
    wanted = {s.name for s in env_switches.of_backend("vulkan")}
    found = library.switches_read(engine, backend_image("vulkan"))
    assert wanted <= found, sorted(wanted - found)
    assert "GGML_VK_VISIBLE_DEVICES" in found  # read too, but set per cell: never tuned
    # the cpu image ships no ggml-vulkan: a probe that found names anywhere would fail here
    assert not library.switches_read(engine, backend_image("cpu")) & wanted
