"""tune.space and tune.search against deterministic response surfaces: what each stack may
try, that the search finds the optimum, never hands back something slower than the defaults
beyond noise, and stays within its budget."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import pytest

from vkrama.errors import ExitStatus, VkramaError
from vkrama.results.records import CellResult, CellStatus, Measurement
from vkrama.tune import space as spaces
from vkrama.tune.noise import Score, faster_beyond_noise
from vkrama.tune.search import search
from vkrama.tune.space import Flags, StackFacts

CPU = StackFacts("cpu", "pp", 2048, threads=2, logical_cpus=2)
GPU = StackFacts("vulkan", "pp", 2048)
TRUE = Callable[[Flags], float]


class Surface:
    """A fake llama-bench: tokens/s from `true` with seeded relative noise `noise`, and a
    clock that advances `unit_s` per configuration and repetition (plus a start). A trial
    that would outrun the time it is given stops there, every value "timed out"."""

    def __init__(
        self, true: TRUE, noise: float = 0.01, unit_s: float = 1.0, seed: int = 0,
        refuse: Callable[[Flags], str | None] = lambda flags: None, cold_s: float = 0.0,
        start_s: float = 1.0, hang: Callable[[Flags], bool] = lambda flags: False,
    ) -> None:  # fmt: skip
        self.true, self.noise, self.unit_s, self.refuse = true, noise, unit_s, refuse
        # cold_s > 0: llama-bench's timing is known (Score.rep_s), each llama-bench process
        # has a start of start_s plus a warm-up run per configuration, the first one cold_s.
        # A configuration that `hang`s never finishes: its trial runs into its timeout.
        self.cold_s, self.start_s, self.hang = cold_s, start_s, hang
        self.rng = random.Random(seed)
        self.now = 0.0
        self.trials: list[list[dict[str, str]]] = []
        self.given: list[tuple[float, float]] = []  # (budget left then, timeout given)
        self.budget_s = 0.0

    def clock(self) -> float:
        return self.now

    def measure(
        self, configs: Sequence[Flags], repetitions: int, timeout_s: float
    ) -> list[Score | str]:
        self.trials.append([dict(c) for c in configs])
        self.given.append((self.budget_s - self.now, timeout_s))
        if self.cold_s:
            starts = self.start_s * len(spaces.together(configs))
            if len(self.trials) == 1:
                starts += self.cold_s - self.start_s
            took = starts + self.unit_s * len(configs) * (repetitions + 1)
        else:
            took = 0.5 + self.unit_s * len(configs) * repetitions
        if any(self.hang(flags) for flags in configs):
            took = float("inf")
        if took > timeout_s:
            self.now += timeout_s
            return ["timed out"] * len(configs)
        self.now += took
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


def slower_off_defaults(flags: Flags) -> float:
    """Every value but llama-bench's default is truly 3 % slower, per flag that has one."""
    defaults = spaces.space(CPU).defaults
    return 1000.0 * 0.97 ** sum(v != defaults[f] for f, v in flags.items())


def test_noise_rarely_passes_for_a_gain_and_a_slower_best_is_never_applied() -> None:
    # 15 % noise over 3 % differences: at 3 repetitions a move is a coin toss. Welch's test at
    # 2.5 % one-sided lets about one search in forty call a truly slower best a gain.
    claimed, slower = 0, 0
    for seed in range(40):
        surface = Surface(slower_off_defaults, noise=0.15, seed=seed)
        tuned = search(spaces.space(CPU), surface.measure, surface.clock, budget_s=3600)
        claimed += tuned.beyond_noise
        slower += slower_off_defaults(tuned.best) < 1000.0 and tuned.beyond_noise
        assert not faster_beyond_noise(tuned.default_score, tuned.best_score)
    assert slower == claimed  # every claimed gain here is noise: the truth is slower
    assert claimed <= 4, f"{claimed} of 40 searches took noise for a gain"


def test_more_repetitions_separate_close_values() -> None:
    # fa on 1.5 % faster than auto at 1 % noise: 3 repetitions cannot tell them apart, the
    # search's 6 and then 12 (21 pooled) can. Under the old rule (2 combined standard
    # deviations, 2.8 % here whatever the count) the two never split.
    def fa_on_faster(flags: Flags) -> float:
        return {"on": 1015.0, "auto": 1000.0, "off": 900.0}[flags["fa"]]

    for seed in range(5):
        surface = Surface(fa_on_faster, noise=0.01, seed=seed)
        only_fa = spaces.space(GPU, only=("fa",))
        tuned = search(only_fa, surface.measure, surface.clock, budget_s=3600)
        assert tuned.best["fa"] == "on", seed
        (sweep,) = tuned.sweeps
        assert [len(t) for t in surface.trials][:2] == [1, 3]  # defaults, then every value
        on = sweep.tried["on"]
        assert isinstance(on, Score) and len(on.samples) > 3  # a later round ran it again


def test_a_value_the_halving_dropped_is_never_kept() -> None:
    # Round 1 (3 reps) cannot split 128, 256, 1024 and 2048; the halving keeps 256 and 128,
    # which at 6 reps fall to ~110. 1024 keeps its lucky 128 from 3 reps, yet it is out.
    first = {"512": 100.0, "64": 90.0, "128": 129.0, "256": 130.0, "1024": 128.0, "2048": 127.0}
    later = {"256": 105.0, "128": 110.0}

    def scripted(configs: Sequence[Flags], repetitions: int, timeout_s: float) -> list[Score | str]:
        found: list[Score | str] = []
        for flags in configs:
            mean = first[flags["ub"]] if repetitions == 3 else later[flags["ub"]]
            spread = 1.0 if flags["ub"] in ("512", "64") else 5.0
            found.append(Score((mean - spread, mean, mean + spread) * (repetitions // 3)))
        return found

    tuned = search(spaces.space(GPU, only=("ub",)), scripted, lambda: 0.0, budget_s=3600)
    (sweep,) = tuned.sweeps
    assert sweep.tried["1024"] == Score((123.0, 128.0, 133.0))  # its 3 reps: the best mean
    assert sweep.kept == "128"


@pytest.mark.parametrize("budget", [10, 30, 60, 120, 400])
def test_the_search_stays_within_its_budget(budget: float) -> None:
    surface = Surface(peaked, unit_s=1.0)
    tuned = search(spaces.space(CPU), surface.measure, surface.clock, budget_s=budget)
    assert tuned.spent_s <= budget
    assert tuned.stopped_by_budget == (budget < 400)
    assert not faster_beyond_noise(tuned.default_score, tuned.best_score)


def test_no_trial_may_run_longer_than_what_is_left_of_the_budget() -> None:
    surface = Surface(peaked, cold_s=5.0, hang=lambda flags: flags["fa"] == "off")
    surface.budget_s = 120.0
    tuned = search(spaces.space(CPU), surface.measure, surface.clock, budget_s=120)
    assert [left for left, timeout in surface.given if timeout > left] == []
    # -fa off never ends: its trial is stopped when the budget is, and the search with it.
    assert tuned.spent_s <= 120
    (fa,) = tuned.sweeps
    assert fa.tried == {"auto": "timed out", "on": "timed out", "off": "timed out"}
    assert tuned.best == tuned.defaults


def test_the_final_comparison_is_priced_as_two_processes_once_two_flags_moved() -> None:
    # Starts of 10 s, 1 s a repetition. After -fa (36 s spent), an -ub sweep of 6 values
    # costs 34 s, and the final comparison of defaults against -fa on -ub 256 is two
    # processes (28 s): 98 s. Priced as one process (18 s) the sweep fitted in 90, and the
    # final comparison was left 20 s for its 28.
    surface = Surface(peaked, cold_s=10.0, start_s=10.0)
    tuned = search(spaces.space(GPU, only=("fa", "ub")), surface.measure, surface.clock, 90)
    assert tuned.spent_s <= 90
    assert tuned.stopped_by_budget and tuned.changed == {"fa": "on"}


def test_a_cold_first_trial_does_not_price_the_rest_when_llama_bench_times_them() -> None:
    # The first trial's start is 30 s (kernels compiled, model read); the rest start in 1 s.
    timed = Surface(peaked, unit_s=1.0, cold_s=30.0)
    tuned = search(spaces.space(CPU), timed.measure, timed.clock, budget_s=150)
    assert tuned.spent_s <= 150 + 1.0  # over by at most one warm start (search._Clocked)
    untimed = Surface(peaked, unit_s=1.0)
    untimed.now = 0.0
    first = [0.0]

    def cold_then_warm(
        configs: Sequence[Flags], repetitions: int, timeout_s: float
    ) -> list[Score | str]:
        untimed.now += 30.0 if not first[0] else 0.0
        first[0] = 1.0
        return untimed.measure(configs, repetitions, timeout_s)

    priced_by_the_cold_trial = search(spaces.space(CPU), cold_then_warm, untimed.clock, 150)
    assert tuned.trials > priced_by_the_cold_trial.trials


def test_a_cold_first_trial_that_ate_half_the_share_still_leaves_the_flags_tried() -> None:
    # cuda on an H200, 2026-12-04: a 120 s share, a first trial of ~56 s (its kernels
    # compiled), warm trials of a few seconds. Priced by that first start, no flag was tried.
    cuda = Surface(peaked, unit_s=0.75, cold_s=50.0)
    tuned = search(spaces.space(CPU), cuda.measure, cuda.clock, budget_s=120)
    assert [sweep.flag for sweep in tuned.sweeps][:2] == list(spaces.space(CPU).flags)[:2]
    assert tuned.spent_s <= 120 + 1.0  # over by at most one warm start


def test_a_budget_smaller_than_one_trial_is_an_error_with_a_hint() -> None:
    surface = Surface(peaked, unit_s=10.0)  # the defaults take 30.5 s
    with pytest.raises(VkramaError) as caught:
        search(spaces.space(CPU), surface.measure, surface.clock, budget_s=20)
    assert caught.value.status == ExitStatus.BUDGET
    assert caught.value.message == (  # stopped when the budget was spent, not after 30 s
        "--budget is too small for one trial: 20s for this stack, and the defaults did not"
        " finish in 20s"
    )
    assert caught.value.hint == "give --budget of at least 3m, or smaller -p/-n sizes"
    assert surface.now == 20.0


def test_a_model_that_runs_with_no_candidate_is_an_error() -> None:
    surface = Surface(peaked, refuse=lambda flags: "failed to create context")
    with pytest.raises(VkramaError) as caught:
        search(spaces.space(GPU), surface.measure, surface.clock, budget_s=600)
    assert caught.value.status == ExitStatus.NOTHING_FITS
    assert "failed to create context" in caught.value.message


def test_a_model_too_big_for_the_gpu_starts_from_the_most_layers_that_run() -> None:
    big = StackFacts("cuda", "tg", 512, fits=False, n_layer=32)

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
    (ctk,) = [s for s in tuned.sweeps if s.flag == "ctk"]
    assert ctk.tried["q4_0"] == "unsupported K cache type"
    assert tuned.best["ctk"] == "q8_0"


# ─── the space ─────────────────────────────────────────────────────────────────────────


def test_ubatch_values_are_powers_of_two_up_to_the_batch_and_the_prompt() -> None:
    found = spaces.space(StackFacts("cuda", "pp", 512))
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
        (StackFacts("cuda", "tg", 512), ("fa", "ctk", "ctv"), {"ngl": "99"}),
        (StackFacts("cuda", "pp", 512, fits=False, n_layer=32),
         ("fa", "ub", "b", "ctk", "ctv", "ngl"), {"ngl": "99"}),
        (StackFacts("cuda", "tg", 512, n_layer=48, expert_count=128),
         ("fa", "ctk", "ctv", "ncmoe"), {"ngl": "99", "ncmoe": "0"}),
        (StackFacts("cuda", "tg", 512, gpu_count=2), ("fa", "ctk", "ctv", "sm"),
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
    stack: StackFacts, flags: tuple[str, ...], defaults: dict[str, str]
) -> None:
    found = spaces.space(stack)
    assert found.flags == flags
    assert found.defaults == {**spaces.DEFAULTS, **defaults}


def test_ngl_and_ncmoe_values_come_from_the_layer_count() -> None:
    found = spaces.space(StackFacts("cuda", "tg", 512, fits=False, n_layer=32, expert_count=8))
    assert found.candidates["ngl"] == ("32", "24", "16", "8")
    assert found.candidates["ncmoe"] == ("0", "8", "16", "32")


@pytest.mark.parametrize(
    ("stack", "flag", "why"),
    [
        (GPU, "t", "threads are tuned on cpu cells only"),
        (StackFacts("cpu", "tg", 128), "ub", "cannot change tg"),
        (GPU, "mmap", "mmap is not a setting vkrama tunes"),
        (CPU, "ub", None),
    ],
    ids=["threads-on-a-gpu-cell", "ubatch-for-tg", "unknown-flag", "ubatch-on-cpu-is-fine"],
)
def test_a_flag_a_stack_cannot_tune_says_why(stack: StackFacts, flag: str, why: str | None) -> None:
    found = spaces.unsearchable(stack, flag)
    assert found == why if why is None else why in (found or "")


def test_a_trial_sweeps_one_flag_as_a_comma_list_and_never_repeats_vkramas_own_flags() -> None:
    from vkrama.bench.plan import BenchParams
    from vkrama.tune import trials

    base = BenchParams(2048, 0, 3)
    threads = [{"fa": "on", "t": t} for t in ("2", "1")]
    assert spaces.together(threads) == [[0, 1]]
    swept = trials.params(base, threads)
    assert (swept.threads, swept.extra_args) == (2, ("-fa", "on", "-t", "1"))
    layers = trials.params(base, [{"ngl": "32", "sm": "layer"}, {"ngl": "32", "sm": "row"}])
    assert (layers.ngl, layers.extra_args) == (32, ("-sm", "row"))
    two_apart = [{"fa": "on", "ub": "256"}, {"fa": "auto", "ub": "512"}]
    assert spaces.together(two_apart) == [[0], [1]]  # a comma list each would cross them


def test_a_process_one_refused_value_failed_is_rerun_value_by_value() -> None:
    from vkrama.results.records import CellResult, CellStatus, Measurement
    from vkrama.tune import trials

    calls: list[list[str]] = []

    def trial(
        ready: object, configs: Sequence[Flags], repetitions: int, timeout_s: float
    ) -> list[CellResult]:
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
    found = trials.scores(trial, None, configs, 2, lambda: 60.0)  # type: ignore[arg-type]
    assert calls == [["f16", "q4_0"], ["f16"], ["q4_0"]]
    assert found[0] == Score((99.0, 101.0), 0.64)
    assert found[1] == "quantized V cache requires flash_attn to be enabled"


def test_what_a_tuning_measured_is_named_as_the_rows_are() -> None:
    from vkrama.results.tunings import test_label

    assert test_label("pp", 2048, 128, ()) == "pp2048"
    assert test_label("tg", 2048, 128, (4096,)) == "tg128 @ d4096"
    assert test_label("both", 512, 64, (0, 4096)) == "pp512+tg64 @ d0,4096"
    assert test_label("pp", 512, 64, (0,)) == "pp512"


class Processes:
    """A fake llama-bench at the level of its processes, for `trials.measure`: a process
    starts in `start_s` (the first in `cold_s`), then runs each configuration's warm-up and
    repetitions at 2048 / `true` seconds each; a refused configuration fails the whole
    process when its turn comes (llama-bench stops at the value it cannot run, the values
    before it measured and lost)."""

    def __init__(self, true: TRUE, refuse: Callable[[Flags], str | None]) -> None:
        self.true, self.refuse = true, refuse
        self.start_s, self.cold_s = 2.0, 20.0
        self.now, self.started = 0.0, 0
        self.rng = random.Random(0)

    def clock(self) -> float:
        return self.now

    def trial(
        self, ready: object, configs: Sequence[Flags], repetitions: int, timeout_s: float
    ) -> list[CellResult]:
        ran = []
        for group in spaces.together(configs):
            mine = [configs[i] for i in group]
            self.now += self.cold_s if not self.started else self.start_s
            self.started += 1
            rows: list[Measurement] = []
            for flags in mine:
                refused = self.refuse(flags)
                if refused:  # after the values before it ran, all of them lost
                    rows = []
                    ran.append(CellResult("cpu", None, "CPU", CellStatus.FAILED, refused))
                    break
                tps = self.true(flags)
                self.now += 2048 / tps * (repetitions + 1)
                samples = tuple(tps * (1 + self.rng.gauss(0, 0.01)) for _ in range(repetitions))
                rows.append(Measurement("pp2048", 2048, 0, tps, 1.0, samples, flags=dict(flags)))
            if rows:
                ran.append(CellResult("cpu", None, "CPU", CellStatus.OK, measurements=tuple(rows)))
        return ran


def test_a_refused_value_does_not_price_the_flags_after_it_out() -> None:
    # A cpu stack at ~320 t/s (6.4 s a repetition of pp2048) with 240 s: -ctk q4_0 is
    # refused, so its process fails after f16 and q8_0 ran, and they rerun one by one.
    # Priced from that trial's whole time, -t was left unaffordable with 118 s unspent.
    from types import SimpleNamespace

    from vkrama.progress import NULL
    from vkrama.tune import trials

    def slow(flags: Flags) -> float:
        return peaked(flags) / 3

    bench = Processes(slow, lambda f: "unsupported K cache type" if f["ctk"] == "q4_0" else None)
    stack = SimpleNamespace(choice=SimpleNamespace(backend="cpu", driver=None))
    measure = trials.measure(stack, bench.trial, NULL, bench.clock)  # type: ignore[arg-type]
    space = spaces.space(CPU, only=("ctk", "t"))
    tuned = search(space, measure, bench.clock, budget_s=240, repetitions=2, rounds=1)
    assert [sweep.flag for sweep in tuned.sweeps] == ["ctk", "t"]
    assert tuned.sweeps[0].tried["q4_0"] == "unsupported K cache type"
    assert tuned.spent_s <= 240


def test_tokens_per_joule_per_repetition_from_a_test_at_a_known_draw() -> None:
    """A test drawing a steady 50 W above idle, two repetitions of 64 tokens at 80 and
    120 t/s: 0.8 s and 0.533 s, 66.7 J above idle for 128 tokens: 1.92 tokens per joule.
    The repetitions share it by speed against their mean (100 t/s): 0.8 and 1.2 times it."""
    from vkrama.results.energy import Energy
    from vkrama.tune import trials

    seconds = 64 / 80 + 64 / 120
    drew = Energy("fake", 70.0, 20.0, 50 * seconds / 128, seconds)
    row = Measurement("tg64", 0, 64, 96.0, 28.3, (80.0, 120.0), energy=drew)
    found = trials.score([row], {}, "joules")
    assert found is not None
    assert found.samples == pytest.approx((0.8 * 1.92, 1.2 * 1.92))
    assert found.mean == pytest.approx(1.92)
    assert trials.score([row], {}, "tg") == Score((80.0, 120.0), 64 / 96.0)


def test_a_trial_without_joules_per_token_says_why_for_joules_only() -> None:
    from vkrama.results.energy import Energy
    from vkrama.tune import trials

    short = Energy("fake", None, 20.0, None, 0.3, "too short to measure: raise -r")
    rows = (Measurement("pp64", 64, 0, 100.0, 1.0, (99.0, 101.0), energy=short),)

    def trial(*_: object) -> list[CellResult]:
        return [CellResult("cpu", None, "CPU", CellStatus.OK, measurements=rows)]

    (found,) = trials.scores(trial, None, [{}], 2, lambda: 60.0, "joules")  # type: ignore[arg-type]
    assert found == "no tokens per joule: pp64: too short to measure: raise -r"
    (speed,) = trials.scores(trial, None, [{}], 2, lambda: 60.0, "pp")  # type: ignore[arg-type]
    assert speed == Score((99.0, 101.0), 0.64)
