"""One command-line grammar (issues 32 and 33): a flag the command would ignore is a usage
error naming the flag that gives it meaning; every comma list refuses an empty list and an
empty item; every duration reads `90s`, `10m`, `500ms` or a bare number in its documented
unit; every usage error carries a hint. All run in-process through `main`, as `vkrama …`."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from vkrama.bench import slo
from vkrama.cli.root import main
from vkrama.errors import ExitStatus


@dataclass
class Ran:
    code: int
    out: str
    err: str


Cli = Callable[..., Ran]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*args: str) -> Ran:
        with pytest.raises(SystemExit) as done:
            main(list(args))
        found = capsys.readouterr()
        return Ran(int(done.value.code or 0), found.out, found.err)

    return run


def usage(done: Ran) -> tuple[str, str]:
    """The one Error line and one Hint line of a usage error."""
    assert done.code == ExitStatus.USAGE, done
    error, hint = done.err.strip().splitlines()
    assert error.startswith("Error: ") and hint.startswith("Hint: "), done.err
    return error, hint


MODEL = "no-such-model.gguf"  # never read: each refusal comes before the model is looked up
BENCH = ("--dry-run", "bench", MODEL, "--backend", "cpu")

SERVING_ONLY = [
    ("--request-rate", "2"), ("--slo", "ttft_p90=500ms"), ("--sweep",), ("--prefix-tokens", "4"),
    ("--arrival", "constant"), ("--duration", "10"), ("--concurrency", "2"), ("--parallel", "2"),
    ("--prompt-tokens", "64"), ("--prompt-source", "random"), ("--gen-tokens", "8"),
    ("--requests", "4"),
]  # fmt: skip


@pytest.mark.parametrize("given", SERVING_ONLY, ids=[g[0] for g in SERVING_ONLY])
def test_a_serving_flag_without_serve_is_a_usage_error_naming_serve(
    cli: Cli, given: tuple[str, ...]
) -> None:
    # Before: `bench --request-rate 2` ran llama-bench and exited 0.
    error, hint = usage(cli(*BENCH, *given))
    assert error == f"Error: {given[0]} means something only with --serve"
    assert hint == f"Hint: add --serve, or drop {given[0]}"


LLAMA_BENCH_ONLY = [
    (("-p", "64"), "--n-prompt"), (("-n", "8"), "--n-gen"), (("-r", "2"), "--repetitions"),
    (("--ngl", "0"), "--ngl"), (("--fa", "on"), "--flash-attn"), (("-d", "0"), "--depth"),
    (("--threads", "1"), "--threads"),
]  # fmt: skip


@pytest.mark.parametrize(("given", "shown"), LLAMA_BENCH_ONLY, ids=[s for _, s in LLAMA_BENCH_ONLY])
def test_a_llama_bench_flag_with_serve_is_a_usage_error(
    cli: Cli, given: tuple[str, ...], shown: str
) -> None:
    error, _hint = usage(cli(*BENCH, "--serve", *given))
    assert error == f"Error: {shown} means something only without --serve (llama-bench's)"


def test_llama_bench_arguments_after_the_dashes_with_serve_are_a_usage_error(cli: Cli) -> None:
    error, _ = usage(cli(*BENCH, "--serve", "--", "-mmp", "0"))
    assert "--serve does not run" in error


IGNORED = [
    ((*BENCH, "-o", "out"), "Error: --output means something only with --generate"),
    (("--dry-run", "serve", MODEL, "-o", "out"),
     "Error: --output means something only with --generate"),
    (("--dry-run", "serve", MODEL, "--replicas", "2"),
     "Error: --replicas means something only with --generate"),
    (("--dry-run", "serve", MODEL, "--generate", "compose", "--replicas", "2"),
     "Error: --replicas means something only with --generate kube"),
    (("serve", MODEL, "--json"), "Error: --json means something only with -d or --dry-run"),
    (("--dry-run", "serve", MODEL, "--backend", "cpu", "--rank-by", "pp"),
     "Error: --rank-by means something only with --backend best"),
    (("tune", "--show", "--budget", "90s"),
     "Error: --budget means something only without --show (they steer a tuning)"),
    (("--dry-run", "tune", MODEL, "-n", "64"),
     "Error: --n-gen means something only with --for tg, both or joules"),
    (("--dry-run", "tune", MODEL, "--for", "tg", "-p", "64"),
     "Error: --n-prompt means something only with --for pp, both or joules"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "error"), IGNORED, ids=[" ".join(a[1:]) for a, _ in IGNORED])
def test_a_flag_the_command_would_ignore_is_a_usage_error(
    cli: Cli, args: tuple[str, ...], error: str
) -> None:
    assert usage(cli(*args))[0] == error


LISTS = [
    (BENCH[:3], "--backend"), (BENCH, "--vk-driver"), (BENCH, "--gpu"), (BENCH, "--depth"),
    (BENCH, "--fa"), (BENCH, "--tensor-split"), ((*BENCH, "--serve"), "--concurrency"),
    ((*BENCH, "--serve"), "--request-rate"), ((*BENCH, "--serve"), "--slo"),
    (("--dry-run", "tune", MODEL), "--backend"), (("--dry-run", "tune", MODEL), "--vk-driver"),
    (("--dry-run", "tune", MODEL), "--depth"), (("--dry-run", "tune", MODEL), "--flags"),
]  # fmt: skip
SHOWN = {"--fa": "--flash-attn"}  # an error names a flag by its long spelling
LIST_IDS = [f"{a[1]} {f}" for a, f in LISTS]


@pytest.mark.parametrize(("args", "name"), LISTS, ids=LIST_IDS)
def test_an_empty_list_is_a_usage_error(cli: Cli, args: tuple[str, ...], name: str) -> None:
    # Before: `--request-rate ''` and `tune --flags ''` ran as if the flag were absent.
    error, _ = usage(cli(*args, name, ""))
    assert error.startswith(f"Error: {SHOWN.get(name, name)} is empty: it takes ")


@pytest.mark.parametrize(("args", "name"), LISTS, ids=LIST_IDS)
def test_an_empty_item_in_a_list_is_a_usage_error(
    cli: Cli, args: tuple[str, ...], name: str
) -> None:
    # Before: `--request-rate 1,,2` dropped the empty item.
    values = {"--fa": "on,,off", "--slo": "ttft_p90=1s,,itl_p90=50ms", "--request-rate": "1,,2",
              "--flags": "ub,,fa", "--backend": "cpu,,vulkan",
              "--vk-driver": "radv,,lavapipe"}  # fmt: skip
    value = values.get(name, "1,,2")
    shown = SHOWN.get(name, name)
    assert usage(cli(*args, name, value))[0] == f"Error: {shown} {value!r} has an empty item"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((*BENCH, "-p", "0", "-n", "0"), "Error: -p and -n are both 0: nothing to measure"),
        ((*BENCH, "--fa", "maybe"), "Error: --flash-attn 'maybe' is not a list of on, off"),
        ((*BENCH, "--serve", "--duration", "10", "--requests", "4"),
         "Error: --duration and --requests both end a level: pass one"),
        ((*BENCH, "--serve", "--sweep", "--slo", "ttft_p90=1s", "--request-rate", "inf"),
         "Error: --sweep starts at --request-rate's first rate: not inf"),
        ((*BENCH, "--serve", "--request-rate", "inf", "--duration", "10"),
         "Error: a burst (--request-rate inf) sends everything at once"),
    ],
    ids=["p-and-n-0", "fa-value", "duration-and-requests", "sweep-from-inf", "burst-duration"],
)  # fmt: skip
def test_each_usage_error_has_a_hint(cli: Cli, args: tuple[str, ...], error: str) -> None:
    assert usage(cli(*args))[0].startswith(error)


@pytest.mark.parametrize(
    "args",
    [
        ("--dry-run", "tune", "{model}", "--backend", "cpu", "--budget", "90", "--timeout", "5m"),
        ("--dry-run", "bench", "{model}", "--backend", "cpu", "--timeout", "2m"),
        ("--dry-run", "bench", "{model}", "--backend", "cpu", "--serve", "--duration", "1500ms"),
        ("--dry-run", "serve", "{model}", "--backend", "cpu", "--timeout", "90s"),
    ],
    ids=["tune-timeout", "bench-timeout", "serve-duration", "serve-timeout"],
)
def test_every_duration_flag_takes_the_one_duration_syntax(
    cli: Cli, tiny_model: Path, args: tuple[str, ...]
) -> None:
    # Before: --timeout and --duration took bare seconds only ("2m" was click's error).
    done = cli(*(a.format(model=tiny_model) for a in args))
    assert done.code == 0, done.err


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("--timeout", "soon"), "Error: --timeout 'soon' is not a duration"),
        (("--timeout", "0"), "Error: --timeout '0' is too short: it takes more than 0 s"),
        (("--timeout", "0ms"), "Error: --timeout '0ms' is too short: it takes more than 0 s"),
        (("--serve", "--duration", "0s"),
         "Error: --duration '0s' is too short: it takes more than 0 s"),
    ],
    ids=["not-a-duration", "bare-zero", "zero-ms", "zero-duration"],
)  # fmt: skip
def test_a_bad_duration_is_a_usage_error(cli: Cli, args: tuple[str, ...], error: str) -> None:
    assert usage(cli(*BENCH, *args))[0] == error


@pytest.mark.parametrize("command", ["serve", "tune"])
def test_every_timeout_has_the_same_floor(cli: Cli, command: str) -> None:
    # Before: serve took --timeout 0 (FloatRange min 0) where bench and tune took min 1;
    # now each takes any time above 0 (serve --timeout 1ms times out at once, as 0 did).
    error, _ = usage(cli("--dry-run", command, MODEL, "--timeout", "0"))
    assert error == "Error: --timeout '0' is too short: it takes more than 0 s"
    done = cli("--dry-run", command, "tiny-model-absent.gguf", "--timeout", "0.5")
    assert "--timeout" not in done.err


@pytest.mark.parametrize(
    ("text", "limit_ms"),
    [("ttft_p90=500ms", 500.0), ("ttft_p90=0.5s", 500.0),
     ("e2e_p99=1m", 60_000.0), ("itl_p50=1s500ms", 1500.0)],
)  # fmt: skip
def test_an_slo_limit_is_the_same_duration_syntax(text: str, limit_ms: float) -> None:
    assert slo.parse(text)[0].limit_ms == limit_ms


def test_tune_flags_take_names_with_or_without_the_dash(cli: Cli, tiny_model: Path) -> None:
    # Its errors print -ub: what they print is accepted back.
    said = [
        cli("--dry-run", "tune", str(tiny_model), "--backend", "cpu", "--flags", flags).out
        for flags in ("fa,t", "-fa,-t")
    ]
    comments = [out.splitlines()[0] for out in said]  # what it would search
    assert comments[0] == comments[1] and "-fa " in comments[0]


def test_serve_dry_run_json_is_the_printed_command(cli: Cli, tiny_model: Path) -> None:
    text = cli("--dry-run", "serve", str(tiny_model), "--backend", "cpu")
    done = cli("--dry-run", "serve", str(tiny_model), "--backend", "cpu", "--json")
    assert done.code == 0, done.err
    found = json.loads(done.out)
    assert set(found) == {"secrets", "prepare", "command"}
    assert text.out.splitlines() == [*found["prepare"], text.out.splitlines()[-1]]
    assert found["command"][:2] == ["podman", "run"] and "--detach" in found["command"]
