"""tune.space and tune.search against deterministic response surfaces: what each stack may
try, that the search finds the optimum, never hands back something slower than the defaults
beyond noise, and stays within its budget."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import pytest

from vkrama.errors import ExitStatus, VkramaError
from vkrama.tune import space as spaces
from vkrama.tune.search import Score, faster_beyond_noise, search
from vkrama.tune.space import Flags, Stack

CPU = Stack("cpu", "pp", 2048, threads=2, logical_cpus=2)
GPU = Stack("vulkan", "pp", 2048)
TRUE = Callable[[Flags], float]


class Surface:
    """A fake llama-bench: tokens/s from `true` with seeded relative noise `noise`, and a
    clock that advances `unit_s` per configuration and repetition (plus a start)."""

    def __init__(
        self, true: TRUE, noise: float = 0.01, unit_s: float = 1.0, seed: int = 0,
        refuse: Callable[[Flags], str | None] = lambda flags: None, cold_s: float = 0.0,
    ) -> None:  # fmt: skip
        self.true, self.noise, self.unit_s, self.refuse = true, noise, unit_s, refuse
        # cold_s > 0: llama-bench's timing is known (Score.rep_s), each trial has a start
        # of 1 s plus a warm-up run per configuration, the first trial's start is cold_s.
        self.cold_s = cold_s
        self.rng = random.Random(seed)
        self.now = 0.0
        self.trials: list[list[dict[str, str]]] = []

    def clock(self) -> float:
        return self.now

    def measure(self, configs: Sequence[Flags], repetitions: int) -> list[Score | str]:
        self.trials.append([dict(c) for c in configs])
        if self.cold_s:
            start = self.cold_s if len(self.trials) == 1 else 1.0
            self.now += start + self.unit_s * len(configs) * (repetitions + 1)
        else:
            self.now += 0.5 + self.unit_s * len(configs) * repetitions
        found: list[Score | str] = []
        for flags in configs:
            refused = self.refuse(flags)
            mean = self.true(flags)
            found.append(
                refused
                if refused
                else Score(
                    tuple(mean * (1 + self.rng.gauss(0, self.noise)) for _ in range(repetitions)),
                    self.unit_s if self.cold_s else 0.0,
                )
            )
        return found


def peaked(flags: Flags) -> float:
    """Separable: best at fa on, ub 256, b 2048, K and V cache q8_0, 2 threads."""
    tps = 1000.0
    tps *= {"on": 1.10, "off": 0.95, "auto": 1.0}[flags["fa"]]
    tps *= 1 - abs(int(flags["ub"]).bit_length() - 9) * 0.04  # 256 is bit_length 9
    tps *= {"f16": 1.0, "q8_0": 1.05, "q4_0": 0.9}[flags["ctk"]]
    tps *= {"f16": 1.0, "q8_0": 1.03, "q4_0": 0.97}[flags["ctv"]]
    tps *= {"1": 0.6, "2": 1.0}.get(flags.get("t", "2"), 1.0)
    return tps


def test_the_search_finds_the_optimum_of_a_separable_surface() -> None:
    surface = Surface(peaked)
    tuned = search(spaces.space(CPU), surface.measure, surface.clock, budget_s=3600)
    assert tuned.changed == {"fa": "on", "ub": "256", "ctk": "q8_0", "ctv": "q8_0"}
    assert tuned.beyond_noise and tuned.gain == pytest.approx(1.10 * 1.04 * 1.05 * 1.03, 0.03)
    assert not tuned.stopped_by_budget


def test_each_trial_sweeps_one_flag_with_the_rest_held() -> None:
    surface = Surface(peaked)
    search(spaces.space(CPU), surface.measure, surface.clock, budget_s=3600)
    assert surface.trials[0] == [spaces.space(CPU).defaults]
    for trial in surface.trials[1:-1]:
        varied = {f for f in trial[0] if len({c[f] for c in trial}) > 1}
        assert len(varied) <= 1, trial


def test_defaults_are_kept_where_they_are_best() -> None:
    def defaults_best(flags: Flags) -> float:
        return 1000.0 - 50 * sum(v != spaces.space(CPU).defaults[f] for f, v in flags.items())

    surface = Surface(defaults_best)
    tuned = search(spaces.space(CPU), surface.measure, surface.clock, budget_s=3600)
    assert tuned.best == tuned.defaults and tuned.gain == 1.0 and not tuned.beyond_noise


@pytest.mark.parametrize("seed", range(12))
def test_never_slower_than_defaults_beyond_noise_even_on_a_noisy_flat_surface(seed: int) -> None:
    # 15 % noise over differences of 1-2 %: every move is a coin toss.
    def flat(flags: Flags) -> float:
        return 1000.0 * (1 + 0.01 * (hash(tuple(sorted(flags.items()))) % 3 - 1))

    surface = Surface(flat, noise=0.15, seed=seed)
    tuned = search(spaces.space(CPU), surface.measure, surface.clock, budget_s=3600)
    assert not faster_beyond_noise(tuned.default_score, tuned.best_score)
    # Truly: a move needs a gain beyond noise, so the truth may differ only by the flat 2 %.
    assert flat(tuned.best) >= flat(tuned.defaults) * 0.97


@pytest.mark.parametrize("budget", [10, 30, 60, 120, 400])
def test_the_search_stays_within_its_budget(budget: float) -> None:
    surface = Surface(peaked, unit_s=1.0)
    tuned = search(spaces.space(CPU), surface.measure, surface.clock, budget_s=budget)
    assert tuned.spent_s <= budget
    assert tuned.stopped_by_budget == (budget < 400)
    assert not faster_beyond_noise(tuned.default_score, tuned.best_score)


def test_a_cold_first_trial_does_not_price_the_rest_when_llama_bench_times_them() -> None:
    # The first trial's start is 30 s (kernels compiled, model read); the rest start in 1 s.
    timed = Surface(peaked, unit_s=1.0, cold_s=30.0)
    tuned = search(spaces.space(CPU), timed.measure, timed.clock, budget_s=150)
    assert tuned.spent_s <= 150 + 1.0  # over by at most one warm start (search._Clocked)
    untimed = Surface(peaked, unit_s=1.0)
    untimed.now = 0.0
    first = [0.0]

    def cold_then_warm(configs: Sequence[Flags], repetitions: int) -> list[Score | str]:
        untimed.now += 30.0 if not first[0] else 0.0
        first[0] = 1.0
        return untimed.measure(configs, repetitions)

    priced_by_the_cold_trial = search(spaces.space(CPU), cold_then_warm, untimed.clock, 150)
    assert tuned.trials > priced_by_the_cold_trial.trials


def test_a_cold_first_trial_that_ate_half_the_share_still_leaves_the_flags_tried() -> None:
    # cuda on an H200, 2026-12-04: a 120 s share, a first trial of ~56 s (its kernels
    # compiled), warm trials of a few seconds. Priced by that first start, no flag was tried.
    cuda = Surface(peaked, unit_s=0.75, cold_s=50.0)
    tuned = search(spaces.space(CPU), cuda.measure, cuda.clock, budget_s=120)
    assert [step.flag for step in tuned.steps][:2] == list(spaces.space(CPU).flags)[:2]
    assert tuned.spent_s <= 120 + 1.0  # over by at most one warm start


def test_a_budget_smaller_than_one_trial_is_an_error_with_a_hint() -> None:
    surface = Surface(peaked, unit_s=10.0)
    with pytest.raises(VkramaError) as caught:
        search(spaces.space(CPU), surface.measure, surface.clock, budget_s=20)
    assert caught.value.status == ExitStatus.BUDGET
    assert caught.value.message == (
        "--budget is too small for one trial: 20s for this stack, and the defaults alone took 30s"
    )
    assert caught.value.hint == "give --budget of at least 5m, or smaller -p/-n sizes"


def test_a_model_that_runs_with_no_candidate_is_an_error() -> None:
    surface = Surface(peaked, refuse=lambda flags: "failed to create context")
    with pytest.raises(VkramaError) as caught:
        search(spaces.space(GPU), surface.measure, surface.clock, budget_s=600)
    assert caught.value.status == ExitStatus.NOTHING_FITS
    assert "failed to create context" in caught.value.message


def test_a_model_too_big_for_the_gpu_starts_from_the_most_layers_that_run() -> None:
    big = Stack("cuda", "tg", 512, fits=False, n_layer=32)

    def oom(flags: Flags) -> str | None:
        return "out of memory" if int(flags["ngl"]) > 20 else None

    surface = Surface(lambda flags: 100.0 + int(flags["ngl"]), refuse=oom)
    tuned = search(spaces.space(big), surface.measure, surface.clock, budget_s=3600)
    assert tuned.defaults["ngl"] == "16" and tuned.best["ngl"] == "16"
    assert [t[0]["ngl"] for t in surface.trials[:3]] == ["99", "32", "24"]
    nothing = Surface(peaked, refuse=lambda flags: "out of memory")
    with pytest.raises(VkramaError) as caught:
        search(spaces.space(big), nothing.measure, nothing.clock, budget_s=3600)
    assert caught.value.message == (
        "no candidate fits: the stack does not run the model at llama-bench's defaults"
        " (nor -ngl 32,24,16,8): out of memory"
    )


def test_a_value_the_stack_refuses_is_recorded_and_never_chosen() -> None:
    def q4_refused(flags: Flags) -> str | None:
        return "unsupported K cache type" if flags["ctk"] == "q4_0" else None

    def q4_fastest(flags: Flags) -> float:
        return peaked(flags) * (3.0 if flags["ctk"] == "q4_0" else 1.0)

    surface = Surface(q4_fastest, refuse=q4_refused)
    tuned = search(spaces.space(GPU), surface.measure, surface.clock, budget_s=3600)
    (ctk,) = [s for s in tuned.steps if s.flag == "ctk"]
    assert ctk.tried["q4_0"] == "unsupported K cache type"
    assert tuned.best["ctk"] == "q8_0"


# ─── the space ─────────────────────────────────────────────────────────────────────────


def test_ubatch_values_are_powers_of_two_up_to_the_batch_and_the_prompt() -> None:
    found = spaces.space(Stack("cuda", "pp", 512))
    assert found.values("ub", {"ub": "512", "b": "2048"}) == ("512", "64", "128", "256")
    assert found.values("ub", {"ub": "128", "b": "256"}) == ("128", "64", "256")
    at_2048 = spaces.space(GPU).values("ub", {"ub": "512", "b": "1024"})
    assert at_2048 == ("512", "64", "128", "256", "1024")
    assert spaces.space(GPU).values("b", {"ub": "1024", "b": "2048"}) == ("2048", "1024")


def test_a_quantized_v_cache_is_tried_only_with_flash_attention_on() -> None:
    found = spaces.space(GPU)
    assert found.values("ctv", {"fa": "auto", "ctv": "f16"}) == ("f16",)
    assert found.values("ctv", {"fa": "on", "ctv": "f16"}) == ("f16", "q8_0", "q4_0")
    assert found.values("fa", {"fa": "on", "ctv": "q8_0"}) == ("on",)
    assert found.values("ctk", {"fa": "off", "ctk": "f16"}) == ("f16", "q8_0", "q4_0")


@pytest.mark.parametrize(
    ("stack", "flags", "defaults"),
    [
        (CPU, ("fa", "ub", "b", "ctk", "ctv", "t"), {"t": "2"}),
        (GPU, ("fa", "ub", "b", "ctk", "ctv"), {"ngl": "99"}),
        (Stack("cuda", "tg", 512), ("fa", "ctk", "ctv"), {"ngl": "99"}),
        (Stack("cuda", "pp", 512, fits=False, n_layer=32), ("fa", "ub", "b", "ctk", "ctv", "ngl"),
         {"ngl": "99"}),
        (Stack("cuda", "tg", 512, n_layer=48, expert_count=128), ("fa", "ctk", "ctv", "ncmoe"),
         {"ngl": "99", "ncmoe": "0"}),
        (Stack("cuda", "tg", 512, gpu_count=2), ("fa", "ctk", "ctv", "sm"),
         {"ngl": "99", "sm": "layer"}),
    ],
    ids=[
        "cpu-cells-tune-threads",
        "gpu-cells-keep-all-layers-on-the-gpu",
        "tg-has-no-batch-sizes-to-tune",
        "a-model-that-does-not-fit-tunes-its-gpu-layers",
        "a-moe-model-tunes-experts-on-the-cpu",
        "two-gpus-tune-the-split-mode",
    ],
)  # fmt: skip
def test_each_stack_searches_only_what_it_accepts(
    stack: Stack, flags: tuple[str, ...], defaults: dict[str, str]
) -> None:
    found = spaces.space(stack)
    assert found.flags == flags
    assert found.defaults == {**spaces.DEFAULTS, **defaults}


def test_ngl_and_ncmoe_values_come_from_the_layer_count() -> None:
    found = spaces.space(Stack("cuda", "tg", 512, fits=False, n_layer=32, expert_count=8))
    assert found.candidates["ngl"] == ("32", "24", "16", "8")
    assert found.candidates["ncmoe"] == ("0", "8", "16", "32")


@pytest.mark.parametrize(
    ("stack", "flag", "why"),
    [
        (GPU, "t", "threads are tuned on cpu cells only"),
        (Stack("cpu", "tg", 128), "ub", "cannot change tg"),
        (GPU, "mmap", "mmap is not a setting vkrama tunes"),
        (CPU, "ub", None),
    ],
    ids=["threads-on-a-gpu-cell", "ubatch-for-tg", "unknown-flag", "ubatch-on-cpu-is-fine"],
)
def test_a_flag_a_stack_cannot_tune_says_why(stack: Stack, flag: str, why: str | None) -> None:
    found = spaces.unsearchable(stack, flag)
    assert found == why if why is None else why in (found or "")


def test_a_trial_sweeps_one_flag_as_a_comma_list_and_never_repeats_vkramas_own_flags() -> None:
    from vkrama.bench.plan import BenchParams
    from vkrama.tune import trials

    base = BenchParams(2048, 0, 3)
    threads = [{"fa": "on", "t": t} for t in ("2", "1")]
    assert trials.together(threads) == [[0, 1]]
    swept = trials.params(base, threads)
    assert (swept.threads, swept.extra_args) == (2, ("-fa", "on", "-t", "1"))
    layers = trials.params(base, [{"ngl": "32", "sm": "layer"}, {"ngl": "32", "sm": "row"}])
    assert (layers.ngl, layers.extra_args) == (32, ("-sm", "row"))
    two_apart = [{"fa": "on", "ub": "256"}, {"fa": "auto", "ub": "512"}]
    assert trials.together(two_apart) == [[0], [1]]  # a comma list each would cross them


def test_a_process_one_refused_value_failed_is_rerun_value_by_value() -> None:
    from vkrama.results.records import CellResult, CellStatus, Measurement
    from vkrama.tune import trials

    calls: list[list[str]] = []

    def trial(ready: object, configs: Sequence[Flags], repetitions: int) -> list[CellResult]:
        values = [c["ctv"] for c in configs]
        calls.append(values)
        if "q4_0" in values:  # llama-bench stops at the value it cannot run
            reason = "quantized V cache requires flash_attn to be enabled"
            return [CellResult("cpu", None, "CPU", CellStatus.FAILED, reason)]
        rows = tuple(
            Measurement("pp64", 64, 0, 100.0, 1.0, (99.0, 101.0), flags={"ctv": v}) for v in values
        )
        return [CellResult("cpu", None, "CPU", CellStatus.OK, measurements=rows)]

    configs = [{"ctv": "f16"}, {"ctv": "q4_0"}]
    found = trials.scores(trial, None, configs, 2)  # type: ignore[arg-type]
    assert calls == [["f16", "q4_0"], ["f16"], ["q4_0"]]
    assert found[0] == Score((99.0, 101.0), 0.64)
    assert found[1] == "quantized V cache requires flash_attn to be enabled"


def test_what_a_tuning_measured_is_named_as_the_rows_are() -> None:
    from vkrama.tune import trials

    assert trials.test_label("pp", 2048, 128, ()) == "pp2048"
    assert trials.test_label("tg", 2048, 128, (4096,)) == "tg128 @ d4096"
    assert trials.test_label("both", 512, 64, (0, 4096)) == "pp512+tg64 @ d0,4096"
    assert trials.test_label("pp", 512, 64, (0,)) == "pp512"
