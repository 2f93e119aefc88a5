"""`vkrama check` end to end: real podman, real llama-server in the cpu and vulkan (lavapipe)
images, the tiny example models, each stack's distributions against the CPU reference.

A stack that computes something else is made for real: its cell's container mounts a model
of the same shape and vocabulary with other weights (another seed) where the reference's
model was; the comparison itself is the one `vkrama check` runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import examplemodel
import pytest

from vkrama import config, results
from vkrama.bench import check, check_store
from vkrama.bench.matrix import BenchRequest
from vkrama.engine import Engine
from vkrama.engine.spec import Mount
from vkrama.errors import ExitStatus, VkramaError
from vkrama.results import checks

pytestmark = [pytest.mark.podman, pytest.mark.slow]

# Small work on a shared 2-core machine: 32 tokens at once, then 48 positions one by one.
SMALL = ("--context", "32", "--positions", "48")
PARAMS = check.CheckParams(context=32, positions=48)


def check_containers(engine: Engine, model: Path) -> list[str]:
    """The check's servers left for this model (by name: other jobs on this podman may run
    a bench of a model at the same path)."""
    mine = {"vkrama.role": "bench", "vkrama.model": model.resolve().as_uri()}
    return [c.name for c in engine.containers(mine) if c.name.startswith("vkrama-check-")]


@pytest.mark.parametrize(
    "server_args",
    [("--threads", "1"), ("--ubatch-size", "8", "--batch-size", "8")],
    ids=["one-thread", "ubatch-8"],
)
def test_the_cpu_against_itself_at_other_threads_or_ubatch_is_ok(
    server_args: tuple[str, ...], vkrama: Callable[..., Any], tiny_model: Path, engine: Engine
) -> None:
    done = vkrama("check", str(tiny_model), "--backend", "cpu", *SMALL, "--json", "--",
                  *server_args)  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    (row,) = found["stacks"]
    assert (row["backend"], row["verdict"], row["positions"]) == ("cpu", "ok", 48)
    assert found["reference"]["cached"] is False
    # The reference is paid once: a second check of the same model reads it back.
    again = vkrama("check", str(tiny_model), "--backend", "cpu", *SMALL, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["reference"]["cached"] is True
    stored = checks.newest(config.load(), _sha(tiny_model),
                           "none", tuple(server_args))  # fmt: skip
    assert [c.verdict for c in stored.values()] == ["ok"]
    assert check_containers(engine, tiny_model) == []


def test_lavapipe_against_the_cpu_is_ok(vkrama: Callable[..., Any], tiny_model: Path) -> None:
    done = vkrama("check", str(tiny_model), "--backend", "vulkan", "--vk-driver", "lavapipe",
                  *SMALL, "--json", timeout=2400)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["stacks"]
    assert (row["driver"], row["verdict"]) == ("lavapipe", "ok"), row
    assert "llvmpipe" in row["device"]


def _on_other_model(planned: check.CheckPlan, model: Path) -> check.CheckPlan:
    """The plan with its one stack's container mounting `model` where the checked one was."""
    (cell,) = planned.cells
    mounts = tuple(
        Mount(model, m.target) if m.target.startswith("/models/") else m for m in cell.spec.mounts
    )
    return replace(planned, cells=[replace(cell, spec=replace(cell.spec, mounts=mounts))])


def _request(model: Path) -> check.CheckRequest:
    return check.CheckRequest(BenchRequest(model=str(model), backends=("cpu",)), PARAMS)


def test_a_stack_that_runs_other_weights_is_wrong_and_stored_so(
    tiny_model: Path, tmp_path: Path, engine: Engine
) -> None:
    other = examplemodel.make("tiny", tmp_path / "tiny-seed-1.gguf", 1, None)
    settings = config.load()
    planned = _on_other_model(check.prepare(settings, _request(tiny_model), engine), other)
    outcome = check_store.run(engine, settings, planned)
    (row,) = outcome.rows
    assert row.verdict == "wrong", row
    assert not outcome.all_ok
    (stored,) = checks.newest(settings, planned.model.sha256, "none").values()
    assert stored.wrong and stored.brief().startswith("wrong output (KL ")


def test_a_stack_whose_tokenizer_differs_is_one_error_and_nothing_is_stored(
    tiny_model: Path, tiny_bpe_model: Path, engine: Engine
) -> None:
    settings = config.load()
    planned = _on_other_model(check.prepare(settings, _request(tiny_model), engine),
                              tiny_bpe_model)  # fmt: skip
    with pytest.raises(VkramaError) as raised:
        check_store.run(engine, settings, planned)
    assert raised.value.status == ExitStatus.INVALID_MODEL
    assert raised.value.message.startswith("vocabulary mismatch: cpu tokenizes the text into")
    assert checks.newest(settings, planned.model.sha256, "none") == {}
    assert check_containers(engine, tiny_model) == []


def test_a_text_shorter_than_the_check_needs_is_one_error_and_nothing_is_stored(
    vkrama: Callable[..., Any], tiny_model: Path, isolated_state: Path
) -> None:
    done = vkrama("check", str(tiny_model), "--backend", "cpu", "--context", "20000",
                  "--positions", "8")  # fmt: skip
    assert done.returncode == ExitStatus.USAGE, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-2].startswith("Error: the CPU reference failed: the text is ")
    assert "the check needs 20009" in lines[-2]
    assert lines[-1].startswith("Hint: lower --context or --positions")
    assert not list((isolated_state / "checks").glob("reference-*"))


def test_a_model_the_server_cannot_load_is_one_error_and_nothing_is_stored(
    vkrama: Callable[..., Any], tmp_path: Path, engine: Engine, isolated_state: Path
) -> None:
    # A whole, well-formed GGUF whose architecture llama.cpp does not know: the store
    # accepts it (its header is sound), the server refuses it.
    whole = examplemodel.make("tiny", tmp_path / "whole.gguf", 0, None).read_bytes()
    named = b"\x05" + b"\x00" * 7  # a GGUF string of 5 bytes: its u64 length, then it
    alien = tmp_path / "alien.gguf"
    alien.write_bytes(whole.replace(named + b"llama", named + b"llamb"))
    done = vkrama("check", str(alien), "--backend", "cpu", *SMALL)
    assert done.returncode == ExitStatus.CONTAINER_EXITED, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [
        "Error: the CPU reference failed: llama-server exited before it was ready:"
        " llama_model_load: error loading model: unknown model architecture: 'llamb'"
    ]
    assert not (isolated_state / "checks").exists()
    assert check_containers(engine, alien) == []


def test_dry_run_prints_each_server_locked_down_and_starts_nothing(
    vkrama: Callable[..., Any], tiny_model: Path, engine: Engine
) -> None:
    done = vkrama("--dry-run", "check", str(tiny_model), "--backend", "cpu", "--", "-fa", "on")
    assert done.returncode == 0, done.stderr
    commands = [line for line in done.stdout.splitlines() if line.startswith("podman run")]
    reference, stack = commands
    for line in commands:
        assert "--read-only" in line and "--cap-drop all" in line and "--publish 127.0.0.1:" in line
    assert "-fa on" in stack and "-fa on" not in reference
    assert check_containers(engine, tiny_model) == []


def _sha(model: Path) -> str:
    import hashlib

    return hashlib.sha256(model.read_bytes()).hexdigest()


def test_bench_checks_unchecked_stacks_first_and_never_ranks_a_wrong_one(
    vkrama: Callable[..., Any], tiny_model: Path, tmp_path: Path, engine: Engine
) -> None:
    """cpu was found wrong by a real check (its cell ran other weights); lavapipe is not yet
    checked, so bench checks it first. cpu is measured and shown, but kept out of the
    verdict lines and out of `serve --backend best`, though it is many times faster."""
    settings = config.load()
    other = examplemodel.make("tiny", tmp_path / "tiny-seed-1.gguf", 1, None)
    planned = _on_other_model(check.prepare(settings, _request(tiny_model), engine), other)
    assert [r.verdict for r in check_store.run(engine, settings, planned).rows] == ["wrong"]
    on = {"VKRAMA_BENCH_CHECK": "true"}
    done = vkrama("bench", str(tiny_model), "--backend", "cpu,vulkan", "--vk-driver", "lavapipe",
                  "-p", "16", "-n", "4", "-r", "1", env=on, timeout=2400)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (first_check,) = [line for line in done.stderr.splitlines() if "output check first" in line]
    if "cpu, " in first_check:  # checked again: its image id is not the one judged wrong
        pytest.skip("another job on this podman rebuilt the cpu image during the test")
    assert first_check.endswith(": vulkan/lavapipe against the CPU")
    lines = done.stdout.splitlines()
    assert lines[0].split()[-2:] == ["status", "output"]
    cpu_rows = [line for line in lines if line.startswith("cpu ")]
    assert cpu_rows and all(line.split()[-2:] == ["ok", "wrong"] for line in cpu_rows)
    unranked = [line for line in lines if line.startswith("cpu: wrong output (KL ")]
    assert len(unranked) == 1 and unranked[0].endswith(", not ranked")
    verdict_lines = [line for line in lines if line.startswith(("pp16:", "tg4:"))]
    assert [line.split()[1] for line in verdict_lines] == ["vulkan/lavapipe"] * 2
    chosen = vkrama("--dry-run", "serve", str(tiny_model), "--backend", "best", env=on)
    assert chosen.returncode == 0, chosen.stderr
    said = [line for line in (chosen.stderr + chosen.stdout).splitlines()
            if line.startswith("--backend best: ")]  # fmt: skip
    assert len(said) == 1 and ": vulkan/lavapipe on " in said[0], chosen.stderr
    # Checked once: the next bench checks nothing.
    again = vkrama("bench", str(tiny_model), "--backend", "cpu", "-p", "16", "-n", "0", "-r", "1",
                   env=on)  # fmt: skip
    assert again.returncode == 0, again.stderr
    runs = results.list_runs(settings)  # newest first
    first, second = (results.get_run(settings, run.id) for run in (runs[1], runs[0]))
    if first.cells[0].image_id == second.cells[0].image_id:  # another job may rebuild it
        assert "output check first" not in again.stderr
        assert second.cells[0].output == first.cells[0].output


def test_tune_keeps_a_quantized_kv_cache_only_after_its_output_check(
    tiny_model: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A won q8_0 KV cache with flash attention on the cpu stack: its server runs with them
    and is checked against the CPU at its defaults; ok, so the tuning stands, and the
    check is stored under those arguments."""
    from vkrama.results import tunings

    monkeypatch.setenv("VKRAMA_BENCH_CHECK", "true")
    settings = config.load()
    won = tunings.TunedStack(
        gpu_key="none", model_sha256=_sha(tiny_model), backend="cpu", driver=None, device="CPU",
        driver_version="", image_id="", objective="pp", test="pp512",
        flags={"fa": "on", "ctk": "q8_0", "ctv": "q8_0"},
        defaults={"fa": "auto", "ctk": "f16", "ctv": "f16"},
        tps=1200.0, tps_stddev=1.0, default_tps=1000.0, default_stddev=1.0, beyond_noise=True,
        spent_s=60.0, trials=4,
    )  # fmt: skip
    cells = BenchRequest(model=str(tiny_model))
    assert check_store.guard_tuning(engine, settings, cells, won) == won
    args = ("--flash-attn", "on", "--cache-type-k", "q8_0", "--cache-type-v", "q8_0")
    (stored,) = checks.newest(settings, won.model_sha256, "none", args).values()
    assert (stored.backend, stored.verdict, stored.server_args) == ("cpu", "ok", args)
