"""`vkrama serve/ps/stop/logs/run` end to end: real podman, real llama-server, the tiny model."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from vkrama.engine import Engine

pytestmark = [pytest.mark.podman, pytest.mark.slow]

SECRET = "sk-e2e-never-shown-4242"
Vkrama = Callable[..., Any]  # the `vkrama` fixture: runs the CLI, returns a Result


# Other sessions may serve at the same time on this host; this one's servers are those
# whose model lies under its pytest base directory.
OURS = {"model_prefix": "file:///nonexistent"}


@pytest.fixture(autouse=True)
def only_this_session(tmp_path_factory: pytest.TempPathFactory) -> None:
    OURS["model_prefix"] = f"file://{tmp_path_factory.getbasetemp()}"


def serve_containers(engine: Engine) -> list[str]:
    """This session's serve containers, by name."""
    return [
        c.name
        for c in engine.containers({"vkrama.role": "serve"})
        if c.labels.get("vkrama.model", "").startswith(OURS["model_prefix"])
    ]


def chat(url: str, content: str = "hi", key: str | None = None, max_tokens: int = 4) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
    }
    response = requests.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


@pytest.fixture
def no_servers_left(engine: Engine) -> Iterator[None]:
    """Every test here must leave no serve container behind; clean up if one did."""
    before = set(serve_containers(engine))
    yield
    left = set(serve_containers(engine)) - before
    for container in engine.containers({"vkrama.role": "serve"}):
        if container.name in left:
            engine.remove(container.id)
    assert not left, f"serve containers left behind: {sorted(left)}"


def test_cpu_and_lavapipe_servers_answer_are_listed_and_stop_all_removes_them(
    vkrama: Vkrama, tiny_model: Path, engine: Engine, no_servers_left: None
) -> None:
    urls = {}
    for args in (["--backend", "cpu"], ["--backend", "vulkan", "--vk-driver", "lavapipe"]):
        done = vkrama("serve", str(tiny_model), *args, "--port", "auto", "-d", "--timeout", "120")
        assert done.returncode == 0, done.stderr
        name, url = done.stdout.split()
        urls[name] = url
        assert url.startswith("http://127.0.0.1:")
        assert chat(url)  # random weights: any non-empty completion
    listed = json.loads(vkrama("ps", "--json").stdout)
    rows = {row["name"]: row for row in listed}
    assert set(urls) <= set(rows)
    backends = {(rows[n]["backend"], rows[n]["driver"]) for n in urls}
    assert backends == {("cpu", None), ("vulkan", "lavapipe")}
    assert {n: (rows[n]["state"], rows[n]["url"]) for n in urls} == {
        n: ("running", url) for n, url in urls.items()
    }
    table = vkrama("ps").stdout
    assert all(name in table for name in urls)
    stopped = vkrama("stop", "--all")
    assert stopped.returncode == 0
    assert set(urls) <= set(stopped.stdout.split())
    assert serve_containers(engine) == []


def test_lavapipe_server_really_runs_on_vulkan(
    vkrama: Vkrama, tiny_model: Path, engine: Engine, no_servers_left: None
) -> None:
    # `-lv 4` after `--` reaches llama-server, which then names the devices it uses.
    done = vkrama("serve", str(tiny_model), "--backend", "vulkan", "--vk-driver", "lavapipe",
                  "--port", "auto", "-d", "--", "-lv", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr
    name = done.stdout.split()[0]
    log = vkrama("logs", name).stdout
    assert "Vulkan0 : llvmpipe" in log
    assert "offloaded 5/5 layers to GPU" in log
    assert vkrama("stop", name).returncode == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_foreground_serve_stops_and_removes_its_container_on(
    signum: signal.Signals, tiny_model: Path, engine: Engine, no_servers_left: None
) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vkrama",
            "serve",
            str(tiny_model),
            "--backend",
            "cpu",
            "--port",
            "auto",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    banner = process.stderr.readline()
    assert banner.startswith("Serving tiny at http://127.0.0.1:"), banner
    url = banner.split()[3].removesuffix("/v1")
    assert chat(url)
    # The server's log reaches stdout while it serves. Read up to a line of it before the
    # signal: a warm server answers the chat within milliseconds, before the log may have.
    assert process.stdout is not None
    assert any("model loaded" in line for line in process.stdout)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Stopping vkrama-tiny-" in err
    assert serve_containers(engine) == []


def test_eight_clients_times_25_requests_all_succeed(
    vkrama: Vkrama, tiny_model: Path, no_servers_left: None
) -> None:
    done = vkrama(
        "serve", str(tiny_model), "--backend", "cpu", "--port", "auto", "-d", "--parallel", "8"
    )
    assert done.returncode == 0, done.stderr
    name, url = done.stdout.split()
    try:

        def client(number: int) -> int:
            with requests.Session() as session:
                for turn in range(25):
                    body = {
                        "model": "tiny",
                        "max_tokens": 2,
                        "messages": [{"role": "user", "content": f"client {number} turn {turn}"}],
                    }
                    answer = session.post(f"{url}/v1/chat/completions", json=body, timeout=120)
                    answer.raise_for_status()
                    assert answer.json()["choices"][0]["message"]["role"] == "assistant"
            return 25

        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(client, range(8))) == 200
    finally:
        vkrama("stop", name)


def test_api_key_is_required_and_never_shown(
    vkrama: Vkrama, tiny_model: Path, tmp_path: Path, no_servers_left: None
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")
    args = [
        "serve",
        str(tiny_model),
        "--backend",
        "cpu",
        "--port",
        "auto",
        "--api-key-file",
        str(key_file),
    ]
    dry = vkrama("--dry-run", *args)
    assert dry.returncode == 0, dry.stderr
    assert "--api-key-file /run/secrets/api-key" in dry.stdout
    done = vkrama(*args, "-d")
    assert done.returncode == 0, done.stderr
    name, url = done.stdout.split()
    try:
        assert requests.get(f"{url}/v1/models", timeout=5).status_code in (200, 401)
        anonymous = requests.post(f"{url}/v1/chat/completions", json={"messages": []}, timeout=5)
        assert anonymous.status_code == 401
        assert chat(url, key=SECRET)
        answer = vkrama(
            "run", str(tiny_model), "say hi", "--max-tokens", "4", "--api-key-file", str(key_file)
        )
        assert answer.returncode == 0, answer.stderr
        shown = [dry, done, answer, vkrama("ps"), vkrama("ps", "--json"), vkrama("logs", name)]
        for result in shown:
            assert SECRET not in result.stdout + result.stderr
    finally:
        vkrama("stop", name)


def test_run_answers_a_prompt_through_a_server_it_removes_afterwards(
    vkrama: Vkrama, tiny_model: Path, engine: Engine, no_servers_left: None
) -> None:
    done = vkrama("run", str(tiny_model), "hello", "--backend", "cpu", "--max-tokens", "4")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert serve_containers(engine) == []


def test_dry_run_shows_the_locked_down_command_and_starts_nothing(
    vkrama: Vkrama, tiny_model: Path, engine: Engine, no_servers_left: None
) -> None:
    done = vkrama("--dry-run", "serve", str(tiny_model), "--backend", "cpu", "--port", "8123")
    assert done.returncode == 0, done.stderr
    command = done.stdout
    assert command.startswith("podman run --detach ")
    assert "--publish 127.0.0.1:8123:8080" in command
    assert "--cap-drop all" in command
    assert "--security-opt no-new-privileges" in command
    assert f"src={tiny_model},dst=/models/tiny.gguf,ro" in command
    assert "--read-only" in command and "--user 1000:1000" in command
    assert serve_containers(engine) == []


def test_busy_port_fails_before_anything_starts(
    vkrama: Vkrama, tiny_model: Path, engine: Engine, no_servers_left: None
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = vkrama("serve", str(tiny_model), "--backend", "cpu", "--port", str(port), "-d")
    assert_one_line_error(done, 16, f"port {port}")
    assert serve_containers(engine) == []


@pytest.mark.parametrize(
    ("damage", "status"),
    [
        pytest.param("truncate", 14, id="truncated-model-is-incomplete"),
        pytest.param("garbage", 15, id="file-that-is-not-gguf-is-invalid"),
    ],
)
def test_corrupt_model_is_refused(
    damage: str,
    status: int,
    vkrama: Vkrama,
    tiny_model: Path,
    tmp_path: Path,
    engine: Engine,
    no_servers_left: None,
) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    if damage == "truncate":
        corrupt.write_bytes(tiny_model.read_bytes()[: tiny_model.stat().st_size // 2])
    else:
        corrupt.write_bytes(bytes(range(256)) * 64)
    done = vkrama("serve", str(corrupt), "--backend", "cpu", "--port", "auto", "-d")
    assert_one_line_error(done, status, "corrupt.gguf")
    assert corrupt.exists()  # the user's file is refused, never deleted
    assert serve_containers(engine) == []


def test_rocm_without_an_amd_gpu_is_refused(
    vkrama: Vkrama, tiny_model: Path, engine: Engine, no_servers_left: None
) -> None:
    done = vkrama("serve", str(tiny_model), "--backend", "rocm", "--port", "auto", "-d")
    assert_one_line_error(done, 8, "rocm")
    assert serve_containers(engine) == []


def test_server_that_exits_early_is_reported_and_removed(
    vkrama: Vkrama, tiny_model: Path, engine: Engine, no_servers_left: None
) -> None:
    done = vkrama(
        "serve",
        str(tiny_model),
        "--backend",
        "cpu",
        "--port",
        "auto",
        "-d",
        "--",
        "--no-such-llama-flag",
    )
    # 7, not the readiness timeout's own code: the exit was seen, not waited out.
    assert done.returncode == 7, done.stderr
    assert "no-such-llama-flag" in done.stderr  # the log tail
    assert serve_containers(engine) == []


def test_timeout_is_its_own_exit_code(
    vkrama: Vkrama, tiny_model: Path, engine: Engine, no_servers_left: None
) -> None:
    done = vkrama(
        "serve", str(tiny_model), "--backend", "cpu", "--port", "auto", "-d", "--timeout", "1ms"
    )
    assert done.returncode == 6, done.stderr
    assert serve_containers(engine) == []


def assert_one_line_error(done: Any, status: int, mentions: str) -> None:
    stderr = done.stderr
    assert done.returncode == status, stderr
    lines = stderr.strip().splitlines()
    assert lines[0].startswith("Error: ") and mentions in lines[0], stderr
    assert all(line.startswith("Hint: ") for line in lines[1:]), stderr


@pytest.fixture
def empty_podman(tmp_path: Path) -> Iterator[str]:
    """A real podman service over an empty image store, so no vkrama image exists there."""
    root = Path("/tmp") / f"vk-empty-{tmp_path.name}"  # short: unix socket paths are limited
    socket_path = root / "podman.sock"
    # Everything private, the tmpdir (events log, exit files) included: sharing /run/libpod
    # with the host's podman would let this fixture disturb other containers.
    storage = ["--root", str(root / "root"), "--runroot", str(root / "run"),
               "--tmpdir", str(root / "tmp"), "--storage-driver", "vfs",
               "--events-backend", "none"]  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    service = subprocess.Popen(
        ["podman", *storage, "system", "service", "--time=0", f"unix://{socket_path}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"unix://{socket_path}"
        left = subprocess.run(
            ["podman", *storage, "ps", "--all", "--quiet"], capture_output=True, text=True
        )
        assert left.stdout.strip() == "", "a container was left in the empty store"
    finally:
        service.terminate()
        service.wait(timeout=20)
        # No `podman system reset`: it clears the shared /run/libpod whatever --tmpdir says.
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_missing_image_with_offline_settings_is_refused(
    vkrama: Vkrama, tiny_model: Path, empty_podman: str
) -> None:
    done = vkrama("--offline", "--engine-url", empty_podman, "serve", str(tiny_model),
                  "--backend", "cpu", "--port", "auto", "-d")  # fmt: skip
    assert_one_line_error(done, 9, "localhost/vkrama/cpu:latest")
    assert "--offline" in done.stderr


def start_foreground(tiny_model: Path) -> tuple[subprocess.Popen[str], str]:
    """A foreground `vkrama serve` once it is ready, and its container name."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vkrama", "serve", str(tiny_model), "--backend", "cpu",
         "--port", "auto"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    banner = process.stderr.readline()
    assert banner.startswith("Serving tiny at "), banner
    return process, banner.split()[5]


def test_foreground_serve_stopped_from_elsewhere_ends_quietly(
    vkrama: Vkrama, tiny_model: Path, engine: Engine, no_servers_left: None
) -> None:
    process, name = start_foreground(tiny_model)
    assert vkrama("stop", name).returncode == 0
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"{name} was stopped" in err


def test_foreground_serve_whose_server_dies_exits_7_and_removes_it(
    tiny_model: Path, engine: Engine, no_servers_left: None
) -> None:
    process, name = start_foreground(tiny_model)
    subprocess.run(["podman", "kill", name], check=True, capture_output=True)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 7, err
    assert f"Error: {name} exited with code 137" in err
    assert name not in serve_containers(engine)


def test_run_without_a_prompt_chats_until_bye(
    tiny_model: Path, engine: Engine, no_servers_left: None
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vkrama", "run", str(tiny_model), "--backend", "cpu",
         "--max-tokens", "3"],
        input="hello\n\nsecond turn\n/bye\nnever sent\n", capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Chatting with tiny. /bye or Ctrl-D ends." in done.stderr
    assert done.stdout.count(">>> ") == 4  # hello, the empty line, second turn, /bye
    assert serve_containers(engine) == []
