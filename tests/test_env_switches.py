"""Each backend's own environment switches: the table's names are in the real image's
library, and the probe that finds them tells one image from another."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vkrama.backends import env_switches
from vkrama.engine import Engine
from vkrama.errors import ExitStatus
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


# -- as tune's dimensions ---------------------------------------------------------------

F16 = "GGML_VK_DISABLE_F16"


def test_a_switch_is_offered_only_where_the_images_library_reads_it() -> None:
    from vkrama.tune import switches

    read = frozenset({F16, "GGML_VK_DISABLE_FUSION", "GGML_CUDA_FORCE_MMQ"})
    offered = [s.name for s in switches.offered("vulkan", read)]
    assert offered == ["GGML_VK_DISABLE_F16", "GGML_VK_DISABLE_FUSION"]  # the table's order
    assert [s.name for s in switches.offered("vulkan", read, only=("fa", F16))] == [F16]
    assert switches.offered("cpu", None) == ()


@pytest.mark.parametrize(
    ("backend", "name", "said"),
    [
        ("vulkan", "GGML_VK_NO_SUCH", "is not an environment switch vkrama tunes"),
        ("vulkan", "GGML_CUDA_FORCE_MMQ", "is read by cuda's ggml, not vulkan's"),
        ("vulkan", "GGML_VK_DISABLE_FUSION", "is not in the libraries of img: its ggml does not"),
    ],
    ids=["unknown", "another-backends", "not-in-this-images-library"],
)
def test_a_switch_that_cannot_be_tuned_is_refused_with_why(
    backend: str, name: str, said: str
) -> None:
    from vkrama.tune import switches

    why = switches.refusal(backend, name, frozenset({F16}), "img")
    assert why is not None and said in why


def test_a_switch_named_for_several_stacks_is_searched_by_its_own_stack_alone() -> None:
    from vkrama.tune import switches

    assert switches.elsewhere("GGML_CUDA_FORCE_MMQ", "vulkan", {"cuda", "vulkan"})
    assert not switches.elsewhere("GGML_CUDA_FORCE_MMQ", "vulkan", {"vulkan"})  # refused
    assert not switches.elsewhere("GGML_VK_DISABLE_F16", "vulkan", {"cuda", "vulkan"})
    assert not switches.elsewhere("fa", "vulkan", {"cuda", "vulkan"})


def test_a_switch_is_a_dimension_its_own_process_runs_and_no_llama_bench_argument() -> None:
    from vkrama.bench.plan import BenchParams
    from vkrama.tune import space, switches, trials

    base = space.Space({"fa": "auto"}, {"fa": ("auto", "on")})
    wide = switches.widen(base, env_switches.of_backend("vulkan")[:1])
    assert wide.flags == ("fa", "GGML_VK_DISABLE_COOPMAT")
    assert wide.values("GGML_VK_DISABLE_COOPMAT", wide.defaults) == ("", "1")
    configs = [{**wide.defaults, "GGML_VK_DISABLE_COOPMAT": v} for v in ("", "1")]
    assert space.together(configs) == [[0], [1]]  # one environment per container
    assert trials.params(BenchParams(), configs[1:]).extra_args == ("-fa", "auto")
    assert env_switches.env_of(configs[0]) == {} and env_switches.env_of(configs[1]) == {
        "GGML_VK_DISABLE_COOPMAT": "1"
    }


def test_a_kept_switch_goes_to_the_environment_never_to_the_arguments() -> None:
    from vkrama.bench import tuned as bench_tuned
    from vkrama.bench.plan import BenchParams
    from vkrama.results.tunings import TunedStack

    won = TunedStack(
        gpu_key="none", model_sha256="0", backend="vulkan", driver="lavapipe", device="d",
        driver_version="", image_id="i", objective="pp", test="pp64",
        flags={"ub": "256", F16: "1", "GGML_VK_DISABLE_FUSION": ""},
        defaults={"ub": "512", F16: "", "GGML_VK_DISABLE_FUSION": ""}, tps=2.0,
        tps_stddev=0.1, default_tps=1.0, default_stddev=0.1, beyond_noise=True, spent_s=1.0,
        trials=3, stopped_by_budget=False,
    )  # fmt: skip
    assert won.bench_args == ("-ub", "256") and won.server_args == ("--ubatch-size", "256")
    assert won.env == {F16: "1"} and won.settings == f"-ub 256 {F16}=1"
    assert won.line.startswith(f"vulkan/lavapipe: -ub 256 {F16}=1: 2.00× its defaults")
    cell = bench_tuned.apply(BenchParams(n_prompt=64, n_gen=0), won, frozenset(), "pp64")
    assert cell.params.extra_args == ("-ub", "256") and cell.label == f"-ub 256 {F16}=1"
    assert cell.env == {F16: "1"}


@pytest.mark.podman
@pytest.mark.slow
def test_tune_searches_a_vulkan_switch_on_lavapipe_and_each_trial_ran_with_it(
    vkrama: Callable[..., Any], tiny_model: Path, settings: Any
) -> None:
    """lavapipe's ggml reads the same switches: unset and 1 each run in their own
    container, and ggml-vulkan's device line shows the switch reached it (fp16: 0). The
    output check is on: F16 off changes the arithmetic, so if it won it was checked first
    (whether it wins on a loaded box is not the test's to decide; each way is asserted)."""
    from vkrama import results

    lavapipe = ("--backend", "vulkan", "--vk-driver", "lavapipe", "-p", "64", "-r", "2")
    done = vkrama("tune", str(tiny_model), *lavapipe, "--flags", F16, "--budget", "150s",
                  env={"VKRAMA_BENCH_CHECK": "true"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"trying {F16}=unset,1 (2 reps)" in done.stderr
    (tuned,) = json.loads(vkrama("tune", "--show", str(tiny_model), "--json").stdout)
    assert tuned["defaults"][F16] == "" and tuned["flags"][F16] in ("", "1")
    checking = f"vulkan/lavapipe: checking its output with {F16}=1 against the CPU"
    if tuned["flags"][F16] == "1" and tuned["beyond_noise"]:
        assert checking in done.stderr
        verdict = f"{F16}=1: output ok (" in done.stderr
        assert verdict == (tuned["refused"] == ""), done.stderr
    else:
        assert checking not in done.stderr and tuned["refused"] == ""
    cells = results.get_run(settings, "latest").cells
    ran = {m.flags[F16]: c.stderr_tail for c in cells if c.ok for m in c.measurements}
    assert set(ran) == {"", "1"}
    assert "| fp16: 0 |" in ran["1"] and "| fp16: 1 |" in ran[""]


@pytest.mark.podman
@pytest.mark.slow
def test_tune_refuses_a_switch_another_backend_reads(
    vkrama: Callable[..., Any], tiny_model: Path
) -> None:
    done = vkrama("tune", str(tiny_model), "--backend", "vulkan", "--vk-driver", "lavapipe",
                  "--flags", "GGML_CUDA_FORCE_MMQ", "--budget", "60s")  # fmt: skip
    assert done.returncode == ExitStatus.USAGE, done.stderr
    assert done.stderr.startswith(
        "Error: cannot tune GGML_CUDA_FORCE_MMQ on vulkan: GGML_CUDA_FORCE_MMQ is read by "
        "cuda's ggml, not vulkan's"
    )


@pytest.mark.podman
def test_the_dry_run_names_the_switches_it_would_check_against_the_image(
    vkrama: Callable[..., Any], tiny_model: Path
) -> None:
    done = vkrama("--dry-run", "tune", str(tiny_model), "--backend", "vulkan",
                  "--vk-driver", "lavapipe", "-p", "64")  # fmt: skip
    assert done.returncode == 0, done.stderr
    (said,) = [line for line in done.stdout.splitlines() if line.startswith("# vulkan/")]
    assert "; -ctv f16,q8_0,q4_0; GGML_VK_DISABLE_COOPMAT=unset,1 (if the image reads it);" in said


def test_a_probe_that_fails_says_so_and_tune_then_offers_no_switch() -> None:
    from vkrama.engine.records import Completed
    from vkrama.errors import VkramaError

    class Failing:
        def run_to_completion(self, spec: Any, timeout: Any = None) -> Completed:
            assert spec.network == "none" and not spec.mounts  # nothing in, nothing out
            return Completed(127, "", "sh: 1: find: not found")

    with pytest.raises(VkramaError) as raised:
        library.switches_read(Failing(), "img")  # type: ignore[arg-type]
    assert "exit 127: sh: 1: find: not found" in raised.value.message


# -- a kept switch that changes numerics passes the output check first --------------------


def _won(flags: dict[str, str], defaults: dict[str, str]) -> Any:
    from vkrama.results.tunings import TunedStack

    return TunedStack(
        gpu_key="none", model_sha256="0", backend="vulkan", driver="lavapipe", device="d",
        driver_version="", image_id="i", objective="pp", test="pp64", flags=flags,
        defaults=defaults, tps=2.0, tps_stddev=0.1, default_tps=1.0, default_stddev=0.1,
        beyond_noise=True, spent_s=1.0, trials=3,
    )  # fmt: skip


def test_a_kept_numerics_switch_whose_check_says_wrong_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the check's seam: a fake check that answers "wrong". The switch reached it as the
    stack's environment (never as a llama-server argument), and the tuning is refused."""
    from engine_fakes import NullEngine

    from vkrama import config
    from vkrama.bench import check_store
    from vkrama.bench.check import CheckRequest, CheckRow
    from vkrama.bench.matrix import BenchRequest

    monkeypatch.setenv("VKRAMA_BENCH_CHECK", "true")
    asked: list[CheckRequest] = []

    def wrong(engine: Any, settings: Any, request: CheckRequest, on_progress: Any) -> list[Any]:
        asked.append(request)
        return [CheckRow("vulkan", "lavapipe", "d", "wrong", "KL 2.5 mean, 4.1 p99 vs CPU")]

    won = _won({"ub": "256", F16: "1"}, {"ub": "512", F16: ""})
    cells = BenchRequest(model="m", env={"MESA_X": "1"})
    said = check_store.guard_tuning(NullEngine(), config.load(), cells, won, check=wrong)
    (request,) = asked
    assert request.server_args == () and request.cells.env == {"MESA_X": "1", F16: "1"}
    assert (request.cells.backends, request.cells.vk_drivers) == (("vulkan",), ("lavapipe",))
    assert said.refused == "wrong output (KL 2.5 mean, 4.1 p99 vs CPU)"
    assert said.env == {} and said.bench_args == () and said.changed == {}
    assert said.line.startswith(
        f"vulkan/lavapipe: llama-bench's defaults stay: -ub 256 {F16}=1 refused, wrong output"
    )


def test_a_kept_switch_that_only_changes_speed_is_not_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from engine_fakes import NullEngine

    from vkrama import config
    from vkrama.bench import check_store
    from vkrama.bench.matrix import BenchRequest

    monkeypatch.setenv("VKRAMA_BENCH_CHECK", "true")

    def never(*args: Any) -> list[Any]:
        raise AssertionError("checked a switch that does not change the arithmetic")

    fusion = "GGML_VK_DISABLE_FUSION"
    won = _won({fusion: "1"}, {fusion: ""})
    assert not env_switches.BY_NAME[fusion].numerics and env_switches.BY_NAME[F16].numerics
    kept = check_store.guard_tuning(NullEngine(), config.load(), BenchRequest("m"), won,
                                    check=never)  # fmt: skip
    assert kept == won and kept.env == {fusion: "1"}


@pytest.mark.podman
@pytest.mark.slow
def test_a_kept_f16_switch_on_lavapipe_is_checked_with_it_and_stored_under_it(
    tiny_model: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real check, on lavapipe, its llama-server started with GGML_VK_DISABLE_F16=1 in
    its environment: f32 where f16 was computes what the CPU computes, so the tuning stands;
    the check is stored under that environment, never as the stack's own check."""
    import hashlib

    from vkrama import config
    from vkrama.bench import check_store
    from vkrama.bench.matrix import BenchRequest
    from vkrama.results import checks

    monkeypatch.setenv("VKRAMA_BENCH_CHECK", "true")
    settings = config.load()
    sha = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    won = replace(_won({F16: "1"}, {F16: ""}), model_sha256=sha)
    said: list[str] = []
    kept = check_store.guard_tuning(
        engine, settings, BenchRequest(model=str(tiny_model)), won, lambda s: said.append(str(s))
    )
    assert kept == won, kept.refused
    assert any(f"checking its output with {F16}=1 against the CPU" in line for line in said)
    (stored,) = checks.newest(settings, sha, "none", (), {F16: "1"}).values()
    assert (stored.backend, stored.driver, stored.verdict) == ("vulkan", "lavapipe", "ok")
    assert stored.env == {F16: "1"}
    assert all(c.env == {} for c in checks.newest(settings, sha, "none").values())
