"""The CLI shell: help, info, errors and exit codes, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vkrama.errors import ExitStatus

Vkrama = Callable[..., Any]  # the `vkrama` fixture: runs the CLI, returns a Result

GROUPS = [
    "images",
    "pull",
    "list",
    "serve",
    "ps",
    "stop",
    "logs",
    "bench",
    "results",
    "devices",
    "info",
    "config",
]


def test_help_lists_every_command_group(vkrama: Vkrama) -> None:
    done = vkrama("--help")
    assert done.returncode == 0
    listed = [
        line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines() if line.strip()
    ]
    for group in GROUPS:
        assert group in listed


# What `vkrama --help` must not import: each is paid for by the commands that use it.
NOT_FOR_HELP = ["podman", "requests", "urllib3", "vkrama.engine", "vkrama.config", "tomllib"]


def test_help_imports_neither_the_engine_nor_the_settings() -> None:
    script = (
        "import sys\nfrom vkrama.cli import main\nsys.argv = ['vkrama', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    sys.stderr.write(' '.join(sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.startswith("Usage: vkrama"), done.stderr
    imported = set(done.stderr.split())
    assert "click" in imported, done.stderr  # the script did import the CLI
    assert sorted(imported & set(NOT_FOR_HELP)) == []


def test_python_dash_m_and_version(vkrama: Vkrama) -> None:
    done = vkrama("--version")
    assert done.returncode == 0 and done.stdout.startswith("vkrama, version ")


def test_an_unreachable_container_host_is_one_error_line_and_a_hint(vkrama: Vkrama) -> None:
    done = vkrama("info", env={"CONTAINER_HOST": "unix:///nonexistent"})
    assert done.returncode == ExitStatus.ENGINE_UNAVAILABLE
    lines = done.stderr.splitlines()
    assert lines[0] == "Error: podman is not reachable at unix:///nonexistent (from CONTAINER_HOST)"
    assert lines[1].startswith("Hint: ")
    assert len(lines) == 2 and "Traceback" not in done.stderr


def test_podman_missing_from_path_is_engine_unavailable(vkrama: Vkrama, tmp_path: Path) -> None:
    done = vkrama("info", env={"PATH": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)})
    assert done.returncode == ExitStatus.ENGINE_UNAVAILABLE
    assert done.stderr.startswith("Error: podman is not installed\nHint: install podman")


def test_a_broken_config_file_is_a_config_error(vkrama: Vkrama, tmp_path: Path) -> None:
    cfg = tmp_path / "config" / "vkrama"
    cfg.mkdir(parents=True)
    (cfg / "vkrama.toml").write_text("[serve]\nport = \n")
    done = vkrama("config", "show")
    assert done.returncode == ExitStatus.CONFIG
    assert done.stderr.startswith(f"Error: {cfg / 'vkrama.toml'}:2: ")


@pytest.mark.parametrize(
    ("setup", "env", "first_line"),
    [
        ("[serve]\nport = 99999\n", {},
         "Error: CFG:2: serve.port must be from 1 to 65535, got 99999"),
        ("", {"VKRAMA_SERVE_PORT": "-1"},
         "Error: env VKRAMA_SERVE_PORT: serve.port must be from 1 to 65535, got -1"),
        ("[models]\nretries = -2\n", {}, "Error: CFG:2: models.retries must be >= 0, got -2"),
        ("", {"VKRAMA_HOME": "FILE"}, "Error: env VKRAMA_HOME: home FILE is not a directory"),
        ("", {"VKRAMA_CONFIG": "MISSING"},
         "Error: env VKRAMA_CONFIG: config file MISSING does not exist"),
    ],
    ids=[
        "port-99999-in-the-user-file",
        "port-minus-one-in-the-environment",
        "negative-retries-in-the-user-file",
        "vkrama-home-naming-a-regular-file",
        "an-explicit-config-file-that-does-not-exist",
    ],
)  # fmt: skip
def test_bad_settings_are_one_error_line_a_hint_and_exit_3(
    vkrama: Vkrama, tmp_path: Path, setup: str, env: dict[str, str], first_line: str
) -> None:
    cfg = tmp_path / "config" / "vkrama" / "vkrama.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(setup)
    plain = tmp_path / "plain-file"
    plain.write_text("x")
    paths = {"CFG": str(cfg), "FILE": str(plain), "MISSING": str(tmp_path / "nope.toml")}
    for word, path in paths.items():
        env = {k: v.replace(word, path) for k, v in env.items()}
        first_line = first_line.replace(word, path)
    done = vkrama("info", env=env)
    assert done.returncode == ExitStatus.CONFIG and ExitStatus.CONFIG.value == 3
    lines = done.stderr.splitlines()
    assert lines[0] == first_line
    assert len(lines) == 2 and lines[1].startswith("Hint: "), done.stderr
    assert done.stdout == ""


def test_unknown_command_is_a_usage_error(vkrama: Vkrama) -> None:
    done = vkrama("frobnicate")
    assert done.returncode == ExitStatus.USAGE
    assert "No such command" in done.stderr


def test_config_show_names_each_source(vkrama: Vkrama) -> None:
    done = vkrama("config", "show", "--json", env={"VKRAMA_SERVE_PORT": "9100"})
    values = json.loads(done.stdout)
    assert values["serve.port"] == {"value": 9100, "source": "env VKRAMA_SERVE_PORT"}
    assert values["serve.host"] == {"value": "127.0.0.1", "source": "default"}


def service_pids(runtime: Path) -> list[str]:
    found = subprocess.run(
        ["pgrep", "-f", f"podman system service.*{runtime}"], capture_output=True, text=True
    )
    return found.stdout.split()


@pytest.mark.podman
def test_info_starts_a_private_service_that_exits_when_idle(vkrama: Vkrama, tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(runtime), "VKRAMA_ENGINE_IDLE_TIMEOUT": "2"}
    if os.getuid() == 0:
        # root's default socket is /run/podman/podman.sock; make sure none answers there
        assert not Path("/run/podman/podman.sock").exists()
    done = vkrama("info", "--json", env=env)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["engine"]["version"] == "4.3.1"
    assert info["engine"]["source"] == "private service"
    assert info["engine"]["started_service"] is True
    assert info["engine"]["url"] == f"unix://{runtime}/vkrama/podman.sock"
    again = json.loads(vkrama("info", "--json", env=env).stdout)
    assert again["engine"]["started_service"] is False  # the second command reused it
    assert service_pids(runtime)
    deadline = time.monotonic() + 20
    while service_pids(runtime) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert service_pids(runtime) == []
    assert not (runtime / "vkrama" / "podman.sock").exists()
