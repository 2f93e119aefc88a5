"""`vkrama results …` and `vkrama bench` flag errors as a user sees them (no podman needed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from bench_fakes import cell, store_run

from vkrama import config
from vkrama.errors import ExitStatus


def test_list_with_nothing_stored_says_how_to_get_results(vkrama: Callable[..., Any]) -> None:
    done = vkrama("results", "list")
    assert done.returncode == 0
    assert done.stdout == "No bench runs stored yet; `vkrama bench MODEL` makes one.\n"
    assert json.loads(vkrama("results", "list", "--json").stdout) == []


def test_show_of_an_unknown_run_is_not_found_with_a_hint(vkrama: Callable[..., Any]) -> None:
    store_run(config.load(), cell("cpu", None, 800, 30))
    done = vkrama("results", "show", "99")
    assert done.returncode == ExitStatus.NOT_FOUND
    assert (
        done.stderr
        == "Error: no bench run '99'\nHint: `vkrama results list` shows the stored runs\n"
    )


def test_show_compare_and_export_of_stored_runs(vkrama: Callable[..., Any]) -> None:
    settings = config.load()
    store_run(settings, cell("cpu", None, 800, 30), cell("vulkan", "lavapipe", 230, 118))
    store_run(settings, cell("cpu", None, 700, 30), cell("vulkan", "lavapipe", 231, 118))
    shown = vkrama("results", "show", "latest")
    assert shown.returncode == 0
    assert shown.stdout.startswith("run 2  ")
    assert "localhost/vkrama/vulkan:latest" in shown.stdout and "Mesa 26.2.6-1" in shown.stdout
    compared = vkrama("results", "compare", "1", "2")
    lines = compared.stdout.splitlines()
    assert lines[0].startswith("A = run 1 (") and ", B = run 2 (" in lines[0]
    assert "-12.5%" in compared.stdout and "slower" in compared.stdout
    assert "within noise" in compared.stdout
    csv_lines = vkrama("results", "export", "1", "2", "--format", "csv").stdout.splitlines()
    assert len(csv_lines) == 1 + 8 and csv_lines[0].startswith("run,model,backend")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-p", "0", "-n", "0"), "Error: -p and -n are both 0: nothing to measure"),
        (("--fa", "maybe"), "Error: --flash-attn 'maybe' is not a list of on, off, auto (or 1, 0)"),
        (("--depth", "0,many"), "Error: --depth '0,many' is not a list of token counts"),
        (("--env", "NOEQUALS"), "Error: --env 'NOEQUALS' is not KEY=VALUE"),
    ],
    ids=[
        "nothing-to-measure",
        "bad-flash-attention-value",
        "depth-not-a-number",
        "env-without-value",
    ],
)
def test_bad_bench_flags_are_usage_errors(
    vkrama: Callable[..., Any], args: tuple[str, ...], message: str
) -> None:
    done = vkrama("bench", "tiny.gguf", *args)
    assert done.returncode == ExitStatus.USAGE
    assert done.stderr.splitlines()[0] == message
