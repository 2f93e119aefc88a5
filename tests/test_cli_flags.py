"""Global flags read the way click parses them: settings load lazily (a broken config does
not break --help, and `config show` shows what is wrong) and -v/-vv are counted, not found
by scanning argv."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vkrama.errors import ExitStatus

Vkrama = Callable[..., Any]


@pytest.fixture
def broken_config(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "vkrama.toml"
    path.write_text("[serve\nport = 1\n")
    return {"VKRAMA_CONFIG": str(path)}


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--help"], id="top-level-help"),
        pytest.param(["serve", "--help"], id="serve-help"),
        pytest.param(["images", "build", "--help"], id="nested-help"),
    ],
)
def test_help_works_with_a_malformed_config(
    vkrama: Vkrama, broken_config: dict[str, str], args: list[str]
) -> None:
    done = vkrama(*args, env=broken_config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: vkrama")


def test_a_command_that_reads_settings_still_refuses_a_malformed_config(
    vkrama: Vkrama, broken_config: dict[str, str]
) -> None:
    done = vkrama("list", env=broken_config)
    assert done.returncode == ExitStatus.CONFIG
    assert done.stderr.startswith(f"Error: {broken_config['VKRAMA_CONFIG']}:1: ")


def test_config_show_reports_a_bad_value_instead_of_dying(vkrama: Vkrama) -> None:
    done = vkrama("config", "show", env={"VKRAMA_SERVE_PORT": "abc"})
    assert done.returncode == ExitStatus.CONFIG
    row = next(line for line in done.stdout.splitlines() if line.startswith("serve.port "))
    assert row.split() == ["serve.port", '"abc"', "env", "VKRAMA_SERVE_PORT:", "INVALID"]
    assert "serve.timeout" in done.stdout  # the good values are all there
    assert done.stderr == (
        "Error: env VKRAMA_SERVE_PORT: serve.port must be int, got 'abc'\n"
        "Hint: give a int, or drop it for the default (8080)\n"
    )
    shown = json.loads(vkrama("config", "show", "--json", env={"VKRAMA_SERVE_PORT": "abc"}).stdout)
    assert shown["serve.port"]["value"] == "abc"
    assert "must be int" in shown["serve.port"]["problem"]
    assert "problem" not in shown["serve.host"]


def test_config_show_reports_a_malformed_file(
    vkrama: Vkrama, broken_config: dict[str, str]
) -> None:
    done = vkrama("config", "show", env=broken_config)
    assert done.returncode == ExitStatus.CONFIG
    assert "serve.port" in done.stdout
    assert done.stderr.startswith(f"Error: {broken_config['VKRAMA_CONFIG']}:1: ")


@pytest.mark.parametrize(
    ("flags", "traceback"),
    [
        pytest.param([], False, id="quiet-user-error-is-one-line"),
        pytest.param(["-v"], True, id="v-shows-the-traceback"),
        pytest.param(["-vv"], True, id="vv-counts-too"),
        pytest.param(["--verbose"], True, id="long-flag"),
    ],
)
def test_verbosity_is_counted_by_click(vkrama: Vkrama, flags: list[str], traceback: bool) -> None:
    done = vkrama(*flags, "pull", "/nonexistent/model.gguf")
    assert done.stderr.startswith("Error: ")
    assert ("Traceback" in done.stderr) is traceback


def test_v_after_the_dashes_belongs_to_llama_bench_not_vkrama(vkrama: Vkrama) -> None:
    done = vkrama("bench", "/nonexistent/model.gguf", "--", "-v")
    assert done.returncode == ExitStatus.NOT_FOUND
    assert "Traceback" not in done.stderr
