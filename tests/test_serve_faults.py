"""Serve under hostile input and faults: odd model names, secrets, signals at bad moments,
servers that never answer. Real podman, real llama-server, the tiny model."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from test_serve_cli_e2e import Vkrama, chat, no_servers_left, only_this_session  # noqa: F401

from vkrama.engine import Engine
from vkrama.serve import containers, plan, ready

pytestmark = [pytest.mark.podman, pytest.mark.slow]


@pytest.fixture(scope="module")
def weird_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model under a name with a comma (podman's --mount and llama-server's
    --alias both split at commas)."""
    path = tmp_path_factory.mktemp("weird") / "we,ird.gguf"
    shutil.copyfile(tiny_model, path)
    return path


def listed_models(url: str) -> set[str]:
    answer = requests.get(f"{url}/v1/models", timeout=10)
    answer.raise_for_status()
    return {entry["id"] for entry in answer.json()["data"]}


def test_the_printed_dry_run_command_of_a_comma_named_model_runs_and_serves(
    vkrama: Vkrama, weird_model: Path, engine: Engine, tmp_path: Path
) -> None:
    name = f"vkrama-test-comma-{tmp_path.name[-12:]}".lower()
    done = vkrama("--dry-run", "serve", str(weird_model), "--backend", "cpu", "--port", "auto",
                  "--name", name)  # fmt: skip
    assert done.returncode == 0, done.stderr
    argv = shlex.split(done.stdout)
    port = int(re.search(r"--publish 127\.0\.0\.1:(\d+):8080", done.stdout)[1])  # type: ignore[index]
    started = subprocess.run(argv, capture_output=True, text=True)
    try:
        assert started.returncode == 0, started.stderr
        url = plan.base_url("127.0.0.1", port)
        ready.wait_ready(url, "we_ird", 120, lambda: containers.is_running(engine, name))
        assert listed_models(url) == {"we_ird"}
    finally:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True)


def test_a_comma_named_model_serves_and_answers_under_an_alias_kept_whole(
    vkrama: Vkrama,
    weird_model: Path,
    no_servers_left: None,  # noqa: F811
) -> None:
    done = vkrama("serve", str(weird_model), "--backend", "cpu", "--port", "auto", "-d",
                  "--timeout", "120")  # fmt: skip
    assert done.returncode == 0, done.stderr
    name, url = done.stdout.split()
    try:
        assert listed_models(url) == {"we_ird"}
        assert chat(url)
    finally:
        vkrama("stop", name)


def all_command_lines() -> str:
    """Every process's argv on this host, as `ps` would show them."""
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"))
        except OSError:  # the process ended meanwhile
            continue
    return "\n".join(lines)


def test_the_api_key_shows_in_no_inspect_and_no_process_list_yet_guards_the_server(
    vkrama: Vkrama,
    tiny_model: Path,
    tmp_path: Path,
    no_servers_left: None,  # noqa: F811
) -> None:
    key = f"sk-{tmp_path.name[-10:]}-never-shown"
    key_file = tmp_path / "key"
    key_file.write_text(f"{key}\n")
    done = vkrama("serve", str(tiny_model), "--backend", "cpu", "--port", "auto", "-d",
                  "--api-key-file", str(key_file))  # fmt: skip
    assert done.returncode == 0, done.stderr
    name, url = done.stdout.split()
    try:
        inspected = subprocess.run(["podman", "inspect", name], capture_output=True, text=True)
        assert inspected.returncode == 0 and name in inspected.stdout
        assert key not in inspected.stdout
        assert "--api-key-file" in all_command_lines()  # the server runs, reading a file
        assert key not in all_command_lines()
        # The stored secret went once podman copied it into the container.
        listed = subprocess.run(["podman", "secret", "ls", "--format", "{{.Name}}"],
                                capture_output=True, text=True, check=True)  # fmt: skip
        assert not [s for s in listed.stdout.split() if s.startswith(name)]
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        for wrong in ({}, {"Authorization": "Bearer sk-wrong"}):
            answer = requests.post(f"{url}/v1/chat/completions", json=body, headers=wrong,
                                   timeout=30)  # fmt: skip
            assert answer.status_code == 401
        assert chat(url, key=key)
    finally:
        vkrama("stop", name)
