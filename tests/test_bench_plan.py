"""bench.plan: identical llama-bench parameters per cell, locked-down containers, core count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench_fakes import CPU, LAVAPIPE, MODEL, make_cell

from vkrama.backends import Choice, compile_cache
from vkrama.bench import plan
from vkrama.bench.plan import BenchCell
from vkrama.engine.spec import Mount


def cell(choice: Choice, params: plan.BenchParams | None = None, **kw: Any) -> BenchCell:
    return make_cell(choice, params, **kw)


def flag(argv: tuple[str, ...], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_cells_differ_only_in_gpu_layers_and_a_cold_repetition() -> None:
    params = plan.BenchParams(n_prompt=64, n_gen=16, repetitions=2)
    cpu, vk = cell(CPU, params).spec.command, cell(LAVAPIPE, params).spec.command
    assert flag(cpu, "-ngl") == "0" and flag(vk, "-ngl") == "999"
    # Vulkan compiles pipelines on first use: one repetition more, its first not counted.
    assert flag(vk, "-r") == "3" and cell(LAVAPIPE, params).cold_reps == 1
    assert cell(CPU, params).cold_reps == 0
    skip = ("-ngl", "-r")
    strip = [
        a for i, a in enumerate(cpu) if i not in [cpu.index(f) + k for f in skip for k in (0, 1)]
    ]
    strip_vk = [
        a for i, a in enumerate(vk) if i not in [vk.index(f) + k for f in skip for k in (0, 1)]
    ]
    assert strip == strip_vk
    assert cpu[0] == "llama-bench" and cpu[-2:] == ("-o", "json")
    assert [flag(cpu, f) for f in ("-m", "-p", "-n", "-r", "-t")] == [
        "/models/tiny.gguf", "64", "16", "2", "4",
    ]  # fmt: skip


def test_defaults_follow_the_llama_cpp_scoreboards() -> None:
    argv = cell(LAVAPIPE).spec.command
    # Five counted repetitions; a vulkan cell runs a sixth first, cold, and drops it.
    assert [flag(argv, f) for f in ("-p", "-n", "-r", "-ngl")] == ["512", "128", "6", "999"]
    assert flag(cell(CPU).spec.command, "-r") == "5"


def test_flash_attention_and_extra_args_are_passed_before_the_output_format() -> None:
    params = plan.BenchParams(flash_attn=("on", "off"), extra_args=("-b", "256"), ngl=10)
    argv = cell(LAVAPIPE, params).spec.command
    assert flag(argv, "-fa") == "on,off" and flag(argv, "-ngl") == "10"
    assert argv[-4:] == ("-b", "256", "-o", "json")


def test_container_is_locked_down_with_the_model_read_only_and_labelled() -> None:
    c = cell(LAVAPIPE)
    spec = c.spec
    assert spec.cap_drop_all and spec.no_new_privileges
    assert [(m.source, m.target, m.read_only) for m in spec.mounts] == [
        (MODEL[0], "/models/tiny.gguf", True)
    ]
    assert spec.devices == ("/dev/dri/renderD128",) and spec.group_add == ("105",)
    assert spec.labels["vkrama.role"] == "bench"
    assert spec.labels["vkrama.backend"] == "vulkan"
    assert spec.labels["vkrama.driver"] == "lavapipe"
    assert spec.labels["vkrama.bench-run"] == "abcd1234"
    assert spec.name == "vkrama-bench-abcd1234-0-vulkan-lavapipe"
    assert "--security-opt no-new-privileges" in spec.podman_command()


def test_env_overrides_and_unsets_reach_the_cell() -> None:
    spec = cell(
        LAVAPIPE, env_overrides={"GGML_VK_DISABLE_F16": "1"}, env_unset=("GGML_VK_VISIBLE_DEVICES",)
    ).spec
    assert "GGML_VK_VISIBLE_DEVICES" not in spec.env
    assert spec.env["GGML_VK_DISABLE_F16"] == "1"
    assert spec.env["VK_DRIVER_FILES"].endswith("lvp_icd.json")


@pytest.mark.parametrize(
    ("params", "tests"),
    [
        (plan.BenchParams(), ["pp512", "tg128"]),
        (plan.BenchParams(n_prompt=0, n_gen=16), ["tg16"]),
        (plan.BenchParams(flash_attn=("on", "off"), n_prompt=64, n_gen=0),
         ["pp64 fa=on", "pp64 fa=off"]),
        (plan.BenchParams(flash_attn=("off", "on"), depth=(0, 4096)),
         ["pp512 fa=off", "tg128 fa=off", "pp512 @ d4096 fa=off", "tg128 @ d4096 fa=off",
          "pp512 fa=on", "tg128 fa=on", "pp512 @ d4096 fa=on", "tg128 @ d4096 fa=on"]),
    ],
    ids=["pp-and-tg", "tg-only", "flash-attention-varied", "depths-within-each-fa-value"],
)  # fmt: skip
def test_expected_tests(params: plan.BenchParams, tests: list[str]) -> None:
    assert params.expected_tests() == tests


def write_topology(root: Path, cores: list[tuple[int, int]]) -> Path:
    for cpu, (package, core) in enumerate(cores):
        topo = root / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{package}\n")
        (topo / "core_id").write_text(f"{core}\n")
    return root


@pytest.mark.parametrize(
    ("cores", "expected"),
    [
        ([(0, 0), (0, 1)], 2),
        ([(0, 0), (0, 0), (0, 1), (0, 1)], 2),
        ([(0, 0), (1, 0)], 2),
    ],
    ids=["two-cores", "hyper-threads-count-once", "same-core-id-on-two-sockets-is-two-cores"],
)
def test_physical_cores_from_sysfs(
    tmp_path: Path, cores: list[tuple[int, int]], expected: int
) -> None:
    root = write_topology(tmp_path / "cpu", cores)
    assert plan.physical_cores(root, tmp_path / "none") == expected


def test_physical_cores_falls_back_to_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    blocks = [f"processor\t: {i}\nphysical id\t: 0\ncore id\t\t: {i // 2}\n" for i in range(4)]
    cpuinfo.write_text("\n".join(blocks))
    assert plan.physical_cores(tmp_path / "missing", cpuinfo) == 2


def test_a_gpu_cell_keeps_its_compiled_kernels_between_runs() -> None:
    cache = compile_cache.for_backend(Path("/home/u/.local/share/vkrama"), "vulkan")
    assert cache is not None
    spec = cell(LAVAPIPE, compile_cache=cache).spec
    assert Mount(cache.host_dir, "/cache/mesa", read_only=False) in spec.mounts
    assert spec.env["MESA_SHADER_CACHE_DIR"] == "/cache/mesa"
    assert [m.read_only for m in spec.mounts if m.target.startswith("/models/")] == [True]
