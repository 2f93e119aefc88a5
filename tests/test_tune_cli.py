"""`vkrama tune`'s flags, --dry-run and --show without running llama-bench; the stored
outcome and its llama-server flags."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vkrama import config, units
from vkrama.errors import ExitStatus, VkramaError
from vkrama.results import tunings


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("90s", 90), ("90", 90), ("1h30m", 5400), ("1m30s", 90), ("0.5m", 30),
     ("500ms", 0.5)],
)  # fmt: skip
def test_a_budget_is_a_duration(text: str, seconds: float) -> None:
    assert units.seconds(text, "--budget") == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10x", "m"])
def test_a_budget_that_is_no_duration_is_a_usage_error(text: str) -> None:
    with pytest.raises(VkramaError) as caught:
        units.seconds(text, "--budget")
    assert caught.value.status == ExitStatus.USAGE and caught.value.hint


def test_dry_run_prints_each_stacks_first_trial_and_what_it_would_search(
    vkrama: Callable[..., Any], tiny_model: Path
) -> None:
    done = vkrama("--dry-run", "tune", str(tiny_model), "--backend", "cpu", "-p", "512")
    assert done.returncode == 0, done.stderr
    comment, command = done.stdout.splitlines()
    head, _, threads = comment.partition("; -t ")
    assert head == (
        "# cpu: the defaults first, then one flag at a time: -fa auto,on,off;"
        " -ub 64,128,256,512; -b 256,512,2048; -ctk f16,q8_0,q4_0; -ctv f16,q8_0,q4_0"
    )
    cores = int(command.split(" -t ")[1].split()[0])  # the trial's own thread count
    counts = [int(t) for t in threads.split(",")]
    # From one thread up to every logical CPU, the trial's own count among them, each once.
    assert counts == sorted(set(counts)) and counts[0] == 1 and cores in counts
    assert counts[-1] == os.cpu_count() and len(counts) <= 4
    assert command.startswith("podman run --name vkrama-bench-")
    assert command.endswith(
        f"llama-bench -m /models/tiny.gguf -p 512 -n 0 -r 3 -ngl 0 -t {cores}"
        " -fa auto -ub 512 -b 2048 -ctk f16 -ctv f16 -o json"
    )
    tg = vkrama("--dry-run", "tune", str(tiny_model), "--backend", "cpu", "--for", "tg", "--json")
    (plan,) = json.loads(tg.stdout)
    assert plan["backend"] == "cpu" and set(plan["searched"]) == {"fa", "ctk", "ctv", "t"}
    assert plan["command"][plan["command"].index("-p") : plan["command"].index("-r")] == [
        "-p", "0", "-n", "128",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--backend", "vulkan", "--vk-driver", "lavapipe", "--flags", "t"),
         "Error: cannot tune -t on vulkan: threads are tuned on cpu cells only"),
        (("--backend", "cpu", "--for", "tg", "--flags", "ub"),
         "Error: cannot tune -ub on cpu: the physical batch (ubatch) cannot change tg"),
        (("--backend", "cpu", "--flags", "mmap"),
         "Error: cannot tune -mmap on cpu: mmap is not a setting vkrama tunes"),
        (("--backend", "cpu", "--budget", "soon"), "Error: --budget 'soon' is not a duration"),
    ],
    ids=["threads-on-vulkan", "ubatch-for-tg", "unknown-flag", "budget-not-a-duration"],
)  # fmt: skip
def test_a_flag_the_stack_refuses_is_one_line_with_a_hint(
    vkrama: Callable[..., Any], tiny_model: Path, args: tuple[str, ...], message: str
) -> None:
    done = vkrama("--dry-run", "tune", str(tiny_model), *args)
    assert done.returncode == ExitStatus.USAGE
    error, hint = done.stderr.strip().splitlines()
    assert error.startswith(message) and hint.startswith("Hint: ")


def test_for_joules_on_a_host_without_a_power_counter_is_refused_and_stores_nothing(
    vkrama: Callable[..., Any], tiny_model: Path, tmp_path: Path
) -> None:
    from fakesys import FakeHost

    host = FakeHost(tmp_path / "host")  # a VM's /sys: no powercap
    env = {"VKRAMA_HARDWARE_SYSFS_ROOT": str(host.sysfs)}
    done = vkrama("tune", str(tiny_model), "--backend", "cpu", "--for", "joules", env=env)
    assert done.returncode == ExitStatus.NO_POWER_COUNTER
    error, hint = done.stderr.strip().splitlines()
    assert error == (
        "Error: tune --for joules needs a power counter, and CPU (cpu) has none: no "
        f"{host.sysfs}/class/powercap (no RAPL driver: a VM or a container does not expose one)"
    )
    assert hint.startswith("Hint: `vkrama doctor` lists this host's counters")
    assert vkrama("results", "list", "--json", env=env).stdout.strip() in ("", "[]")
    # with a RAPL zone the plan goes ahead, measuring pp and tg as --for both does
    host.add_rapl_zone(0)
    plan = vkrama("--dry-run", "tune", str(tiny_model), "--backend", "cpu", "--for", "joules",
                  "-p", "512", "-n", "64", "--json", env=env)  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    (first,) = json.loads(plan.stdout)
    command = first["command"]
    assert command[command.index("-p") : command.index("-r")] == ["-p", "512", "-n", "64"]


def test_show_with_nothing_stored_says_how_to_make_one(vkrama: Callable[..., Any]) -> None:
    done = vkrama("tune", "--show")
    assert done.returncode == 0 and "vkrama tune MODEL" in done.stderr
    assert json.loads(vkrama("tune", "--show", "--json").stdout) == []


def tuned(**changes: Any) -> tunings.TunedStack:
    base: dict[str, Any] = dict(
        gpu_key="none", model_sha256="ab" * 32, backend="vulkan", driver="lavapipe",
        device="llvmpipe", driver_version="Mesa 26.2", image_id="sha256:v", objective="pp",
        test="pp2048", flags={"fa": "on", "ub": "256", "b": "2048", "ctk": "q8_0",
                              "ctv": "f16", "ngl": "99"},
        defaults={"fa": "auto", "ub": "512", "b": "2048", "ctk": "f16", "ctv": "f16",
                  "ngl": "99"},
        tps=118.0, tps_stddev=1.0, default_tps=100.0, default_stddev=1.0, beyond_noise=True,
        spent_s=80.0, trials=9,
    )  # fmt: skip
    return tunings.TunedStack(**{**base, **changes})


def test_the_outcome_line_names_the_changed_flags_and_the_gain() -> None:
    assert tuned().line == (
        "vulkan/lavapipe: -fa on -ub 256 -ctk q8_0: 1.18× its defaults"
        " (118.0 vs 100.0 t/s pp2048), beyond noise"
    )
    same = tuned(flags=tuned().defaults, tps=100.0, beyond_noise=False)
    assert same.line == (
        "vulkan/lavapipe: llama-bench's defaults stay, no flag beat them beyond noise"
        " (100.0 t/s pp2048)"
    )


def test_a_tuning_for_joules_says_tokens_per_joule() -> None:
    frugal = tuned(objective="joules", test="pp2048+tg128", tps=2.46, default_tps=2.05)
    assert frugal.line == (
        "vulkan/lavapipe: -fa on -ub 256 -ctk q8_0: 1.20× its defaults"
        " (2.46 vs 2.05 tokens/J pp2048+tg128), beyond noise"
    )


def test_a_tuning_within_noise_is_kept_as_tried_and_never_applied() -> None:
    within = tuned(tps=101.0, default_tps=100.0, beyond_noise=False)
    assert within.line == (
        "vulkan/lavapipe: llama-bench's defaults stay: -fa on -ub 256 -ctk q8_0 tried,"
        " 1.01× its defaults (101.0 vs 100.0 t/s pp2048), within noise"
    )
    assert within.tried == {"fa": "on", "ub": "256", "ctk": "q8_0"}
    assert (within.changed, within.bench_args, within.server_args) == ({}, (), ())


def test_llama_bench_flags_become_llama_servers() -> None:
    assert tuned().server_args == (
        "--flash-attn", "on", "--ubatch-size", "256", "--cache-type-k", "q8_0",
    )  # fmt: skip
    every = tuned(flags={"ub": "1", "b": "2", "fa": "off", "ctk": "q4_0", "ctv": "q4_0",
                         "t": "3", "ngl": "4", "ncmoe": "5", "sm": "row"}, defaults={})  # fmt: skip
    assert every.server_args == (
        "--ubatch-size", "1", "--batch-size", "2", "--flash-attn", "off", "--cache-type-k",
        "q4_0", "--cache-type-v", "q4_0", "--threads", "3", "--n-gpu-layers", "4",
        "--n-cpu-moe", "5", "--split-mode", "row",
    )  # fmt: skip


def test_the_newest_tuning_per_stack_is_stored_and_read_back(settings: config.Settings) -> None:
    tunings.save(settings, tuned(tps=110.0))
    tunings.save(settings, tuned())
    tunings.save(settings, tuned(backend="cpu", driver=None, image_id="sha256:c"))
    found = tunings.newest(settings, "ab" * 32, "none")
    assert [(t.key, t.tps) for t in found] == [("cpu", 118.0), ("vulkan/lavapipe", 118.0)]
    assert found[1] == tuned(created=found[1].created)
    assert tunings.for_test(found, "vulkan", "lavapipe", "pp", "pp2048") == found[1]
    assert tunings.for_test(found, "vulkan", "lavapipe", "pp", "pp512") is None
    assert tunings.newest(settings, "cd" * 32) == []


def stored_for(settings: config.Settings, model: Path, **changes: Any) -> tunings.TunedStack:
    import hashlib

    from vkrama import hardware

    found = tuned(
        model_sha256=hashlib.sha256(model.read_bytes()).hexdigest(),
        gpu_key=hardware.detect_host(settings).gpu_key(None),
        **changes,
    )
    tunings.save(settings, found)
    return found


def test_serve_backend_best_starts_the_fastest_tuned_stack_with_its_flags(
    vkrama: Callable[..., Any], tiny_model: Path, settings: config.Settings, tmp_path: Path
) -> None:
    stored_for(settings, tiny_model, tps=90.0)  # vulkan/lavapipe, slower
    cpu = {"fa": "on", "ub": "256", "b": "2048", "ctk": "f16", "ctv": "f16", "t": "1"}
    stored_for(settings, tiny_model, backend="cpu", driver=None, device="CPU", tps=150.0,
               flags=cpu, defaults={**cpu, "fa": "auto", "ub": "512", "t": "2"})  # fmt: skip
    stored_for(settings, tiny_model, objective="tg", test="tg128", tps=999.0)  # not for pp
    done = vkrama("--dry-run", "serve", str(tiny_model), "--backend", "best", "--rank-by", "pp",
                  "--port", "8123", "--", "--temp", "0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "localhost/vkrama/cpu:latest" in done.stdout
    assert done.stdout.rstrip().endswith(
        "--n-gpu-layers 0 --flash-attn on --ubatch-size 256 --threads 1 --temp 0"
    )
    assert "--backend best: fastest tuned for pp2048: cpu on CPU at 150.0 ± 1.0 t/s with" in (
        done.stderr
    )
    assert "of 2 stacks tuned for pp2048" in done.stderr
    assert "-fa on -ub 256 -t 1" in done.stderr
    for kind in ("compose", "quadlet", "kube"):
        out = str(tmp_path / kind)
        generated = vkrama("serve", str(tiny_model), "--backend", "best", "--rank-by", "pp",
                           "--port", "18080", "--generate", kind, "-o", out)  # fmt: skip
        assert generated.returncode == 0, generated.stderr
        (written,) = (tmp_path / kind).iterdir()
        text = written.read_text()
        assert "--ubatch-size" in text and "256" in text and "--threads" in text, kind


def test_serve_best_lets_the_users_flags_win_and_says_which_tuning_it_used(
    vkrama: Callable[..., Any], tiny_model: Path, settings: config.Settings
) -> None:
    layers = {"fa": "on", "ub": "512", "b": "2048", "ctk": "f16", "ctv": "f16", "ngl": "20"}
    stored_for(settings, tiny_model, flags=layers, defaults={**layers, "ngl": "99"})
    done = vkrama("--dry-run", "serve", str(tiny_model), "--backend", "best", "--rank-by", "pp",
                  "--ngl", "10", "--port", "8123")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--n-gpu-layers 10" in done.stdout and "--n-gpu-layers 20" not in done.stdout
    # serve ranks by tg unless told; tune tunes for pp unless told: the tuning is not used,
    # and serve says so (here with no bench results to fall back on: an error that says it).
    default = vkrama("--dry-run", "serve", str(tiny_model), "--backend", "best", "--port", "8123")
    assert default.returncode == ExitStatus.NOT_FOUND
    assert "--rank-by pp ranks the tunings made for pp2048" in default.stderr


def test_bench_tuned_runs_each_stack_at_its_own_flags(
    vkrama: Callable[..., Any], tiny_model: Path, settings: config.Settings
) -> None:
    cpu = {"fa": "on", "ub": "256", "b": "2048", "ctk": "f16", "ctv": "f16", "t": "1"}
    stored_for(settings, tiny_model, backend="cpu", driver=None, device="CPU", flags=cpu,
               defaults={**cpu, "fa": "auto", "ub": "512", "t": "2"}, test="pp64")  # fmt: skip
    # Tuned for pp2048 only: nothing for the pp64 this bench runs.
    stored_for(settings, tiny_model, test="pp2048")
    done = vkrama("--dry-run", "bench", str(tiny_model), "--backend", "cpu,vulkan", "--tuned",
                  "--vk-driver", "lavapipe", "-p", "64", "-n", "0", "-r", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    cpu_run, vulkan_run = [line for line in done.stdout.splitlines() if "podman run" in line]
    assert cpu_run.endswith("-p 64 -n 0 -r 2 -ngl 0 -t 1 -fa on -ub 256 -o json")
    # No tuning for pp64: llama-bench's defaults, nothing added, and it says so.
    assert vulkan_run.endswith(" -t " + vulkan_run.split(" -t ")[1]) and " -fa " not in vulkan_run
    assert vulkan_run.split(" -t ")[1].split()[1:] == ["-o", "json"]
    assert "# vulkan/lavapipe: pp64: not tuned for it, at llama-bench's defaults" in done.stdout
    assert "# cpu: pp64 at its tuning for pp64: -fa on -ub 256 -t 1" in done.stdout
    # What the user gives wins over the tuning: --fa off and --threads 2, -ub 128 after --.
    mine = vkrama("--dry-run", "bench", str(tiny_model), "--backend", "cpu", "--tuned",
                  "-p", "64", "-n", "0", "-r", "2", "--fa", "off", "--threads", "2",
                  "--", "-ub", "128")  # fmt: skip
    assert mine.returncode == 0, mine.stderr
    (run,) = [line for line in mine.stdout.splitlines() if "podman run" in line]
    assert run.endswith("-p 64 -n 0 -r 2 -ngl 0 -t 2 -fa off -ub 128 -o json")
    assert "(yours kept: -fa -ub -t)" in mine.stdout


def test_bench_tuned_runs_each_test_at_the_tuning_made_for_it(
    vkrama: Callable[..., Any], tiny_model: Path, settings: config.Settings
) -> None:
    pp = {"fa": "on", "ub": "256", "b": "2048", "ctk": "f16", "ctv": "f16", "t": "2"}
    defaults = {**pp, "fa": "auto", "ub": "512"}
    stored_for(settings, tiny_model, backend="cpu", driver=None, device="CPU", flags=pp,
               defaults=defaults, test="pp64")  # fmt: skip
    stored_for(settings, tiny_model, backend="cpu", driver=None, device="CPU", objective="tg",
               test="tg16", flags={**defaults, "ctk": "q8_0"}, defaults=defaults)  # fmt: skip
    done = vkrama("--dry-run", "bench", str(tiny_model), "--backend", "cpu", "--tuned",
                  "-p", "64", "-n", "16", "-r", "2", "--threads", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = [
        line.split(" llama-bench ")[1] for line in done.stdout.splitlines() if "podman run" in line
    ]
    assert runs == [
        "-m /models/tiny.gguf -p 64 -n 0 -r 2 -ngl 0 -t 2 -fa on -ub 256 -o json",
        "-m /models/tiny.gguf -p 0 -n 16 -r 2 -ngl 0 -t 2 -ctk q8_0 -o json",
    ]


def test_verdicts_of_a_tuned_bench_name_each_cells_flags() -> None:
    from bench_fakes import cell

    from vkrama.results import verdicts

    tuned_cpu = cell("cpu", None, 800, 30)
    cells = [
        replace(tuned_cpu, tuned="-t 1 -fa on"),
        replace(cell("vulkan", "lavapipe", 400, 20), tuned="not tuned"),
    ]
    assert verdicts(cells)[0].line == (
        "pp64: cpu tuned (-t 1 -fa on) fastest at 800.0 ± 1.0 t/s,"
        " 2.00x vulkan/lavapipe (not tuned): beyond noise"
    )


def test_serve_best_compares_only_tunings_of_one_test_and_names_the_rest(
    settings: config.Settings,
) -> None:
    sha = "ab" * 32
    # vulkan was tuned at pp512 (900 t/s): not comparable with pp2048's 150 and 200.
    tunings.save(settings, tuned(test="pp512", tps=900.0))
    tunings.save(settings, tuned(backend="cpu", driver=None, tps=150.0))
    tunings.save(settings, tuned(backend="cuda", driver=None, tps=200.0))
    ranked = tunings.best(settings, sha, "none", "pp")
    assert ranked is not None
    assert (ranked.winner.key, ranked.winner.test) == ("cuda", "pp2048")
    assert [t.key for t in ranked.rivals] == ["cpu"]
    assert ranked.untuned == ["vulkan/lavapipe (pp512)"]
    assert "; not tuned for pp2048: vulkan/lavapipe (pp512)" in ranked.reason
    assert tunings.best(settings, sha, "other-gpu", "pp") is None


def test_serve_best_takes_a_tuning_for_both_when_none_is_for_the_metric_alone(
    settings: config.Settings,
) -> None:
    sha = "ab" * 32
    tunings.save(settings, tuned(objective="tg", test="tg128 @ d4096", tps=500.0))
    tunings.save(settings, tuned(backend="cuda", driver=None, objective="tg",
                                 test="tg128 @ d0,4096", tps=200.0))  # fmt: skip
    tunings.save(settings, tuned(backend="cpu", driver=None, objective="both", tps=900.0))
    tg = tunings.best(settings, sha, "none", "tg")  # one stack at each test: the shallowest
    assert tg is not None and (tg.winner.backend, tg.winner.test) == ("cuda", "tg128 @ d0,4096")
    both = tunings.best(settings, sha, "none", "pp")  # none for pp alone: both counts
    assert both is not None and both.winner.backend == "cpu"


@pytest.mark.parametrize("spelled", ["ub,fa", "-ub,-fa", "--ubatch-size,--flash-attn"])
def test_flags_takes_llama_cpps_names_as_either_tool_spells_them(
    vkrama: Callable[..., Any], tiny_model: Path, spelled: str
) -> None:
    done = vkrama("--dry-run", "tune", str(tiny_model), "--backend", "cpu", "-p", "512",
                  "--flags", spelled, "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    (plan,) = json.loads(done.stdout)
    assert set(plan["searched"]) == {"ub", "fa"}


def test_a_tuning_for_both_serves_both_tests_in_one_cell_and_a_user_split_mode_wins() -> None:
    from vkrama.bench import tuned as bench_tuned
    from vkrama.bench.plan import BenchParams

    both = tuned(backend="cpu", driver=None, objective="both", test="pp64+tg16",
                 flags={"fa": "on", "sm": "row"},
                 defaults={"fa": "auto", "sm": "layer"})  # fmt: skip
    (cell,) = bench_tuned.plan(BenchParams(64, 16, 2), [both], "cpu", None, frozenset({"sm"}))
    assert (cell.label, cell.split_mode) == ("-fa on", None)
    assert cell.params.extra_args == ("-fa", "on") and cell.params.n_gen == 16
    assert cell.said == "pp64+tg16 at its tuning for pp64+tg16: -fa on (yours kept: -sm)"
    # Another size is another question: no tuning for it.
    (other,) = bench_tuned.plan(BenchParams(512, 0, 2), [both], "cpu", None)
    assert other.label == "not tuned for pp512" and other.params.extra_args == ()
