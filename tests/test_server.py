"""server.plan, pick_port and wait_ready: the serve container and its readiness, no podman."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from serve_stub import send_json

from vkrama.backends import Choice, compile_cache
from vkrama.engine.spec import Mount
from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import Event, Waiting
from vkrama.serve import plan as server
from vkrama.serve import ready


@dataclass(frozen=True)
class FakeModel:
    """The fields of store.LocalModel that plan reads."""

    name: str = "tiny"
    path: Path = Path("/data/models/tiny.gguf")
    files: tuple[Path, ...] = (Path("/data/models/tiny.gguf"),)
    sha256: str = "ab" * 32


LAVAPIPE = Choice(
    backend="vulkan",
    driver="lavapipe",
    gpu=None,
    devices=("/dev/dri/renderD128",),
    group_add=("105",),
    env={"GGML_VK_VISIBLE_DEVICES": "0"},
    reason="asked for",
)


def request(**overrides: object) -> tuple[server.ServeRequest, server.Resolved]:
    """A serve request and what it resolved to; `overrides` go to whichever has the field."""
    resolved: dict[str, object] = {
        "model": FakeModel(),
        "choice": Choice(backend="cpu", driver=None, gpu=None, reason="asked for"),
        "image": "localhost/vkrama/cpu:latest",
        "port": 8099,
    }
    asked: dict[str, object] = {"model": "tiny.gguf"}
    for key, value in overrides.items():
        (resolved if key in server.Resolved.__dataclass_fields__ else asked)[key] = value
    return server.ServeRequest(**asked), server.Resolved(**resolved)  # type: ignore[arg-type]


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_cpu_plan_is_locked_down_and_published_on_loopback() -> None:
    spec = server.plan(*request())
    argv = spec.podman_argv(detach=True)
    command = spec.podman_command(detach=True)
    assert "--publish 127.0.0.1:8099:8080" in command
    assert "--cap-drop all" in command
    assert "--security-opt no-new-privileges" in command
    assert "--read-only" in argv and "--tmpfs /tmp:rw,nosuid,nodev" in command
    assert "type=bind,src=/data/models/tiny.gguf,dst=/models/tiny.gguf,ro" in command
    assert flag_value(argv, "--user") == "1000:1000"
    assert spec.command[:2] == ("llama-server", "--model")
    assert flag_value(list(spec.command), "--model") == "/models/tiny.gguf"
    assert flag_value(list(spec.command), "--port") == "8080"
    assert flag_value(list(spec.command), "--n-gpu-layers") == "0"
    assert spec.name == "vkrama-tiny-8099"
    assert spec.devices == () and spec.group_add == ()


def test_labels_say_what_serves_where() -> None:
    spec = server.plan(*request(choice=LAVAPIPE, image="localhost/vkrama/vulkan:latest"))
    assert spec.labels == {
        "vkrama.role": "serve",
        "vkrama.model": "tiny",
        "vkrama.alias": "tiny",
        "vkrama.backend": "vulkan",
        "vkrama.driver": "lavapipe",
        "vkrama.device": "llvmpipe (lavapipe)",
        "vkrama.url": "http://127.0.0.1:8099",
        "vkrama.model_path": "/data/models/tiny.gguf",
        "vkrama.model_sha256": "ab" * 32,
    }


@pytest.mark.parametrize(
    ("overrides", "flag", "expected"),
    [
        pytest.param(
            {"choice": LAVAPIPE}, "--n-gpu-layers", "999", id="gpu-backend-offloads-every-layer"
        ),
        pytest.param(
            {"choice": LAVAPIPE, "ngl": 4},
            "--n-gpu-layers",
            "4",
            id="ngl-flag-wins-over-backend-default",
        ),
        pytest.param({"ctx_size": 512}, "--ctx-size", "512", id="ctx-size-is-passed-through"),
        pytest.param({"parallel": 8}, "--parallel", "8", id="parallel-is-passed-through"),
        pytest.param(
            {"alias": "chat"}, "--alias", "chat", id="alias-flag-names-the-model-for-clients"
        ),
        pytest.param({}, "--alias", "tiny", id="alias-defaults-to-the-model-name"),
    ],
)
def test_llama_server_flags(overrides: dict[str, object], flag: str, expected: str) -> None:
    command = list(server.plan(*request(**overrides)).command)
    assert flag_value(command, flag) == expected


def test_gpu_choice_brings_only_its_devices_groups_and_env() -> None:
    spec = server.plan(*request(choice=LAVAPIPE))
    argv = spec.podman_argv()
    assert flag_value(argv, "--device") == "/dev/dri/renderD128"
    assert flag_value(argv, "--group-add") == "105"
    assert spec.env["GGML_VK_VISIBLE_DEVICES"] == "0"


def test_extra_args_come_last() -> None:
    spec = server.plan(*request(extra_args=("--temp", "0")))
    assert spec.command[-2:] == ("--temp", "0")


def test_split_model_mounts_every_part_and_loads_the_first() -> None:
    parts = (Path("/m/big-00001-of-00002.gguf"), Path("/m/big-00002-of-00002.gguf"))
    spec = server.plan(*request(model=FakeModel(name="big", path=parts[0], files=parts)))
    assert [m.target for m in spec.mounts] == [
        "/models/big-00001-of-00002.gguf",
        "/models/big-00002-of-00002.gguf",
    ]
    assert all(m.read_only for m in spec.mounts)
    assert flag_value(list(spec.command), "--model") == "/models/big-00001-of-00002.gguf"


def test_a_comma_in_the_model_name_gives_an_alias_llama_server_keeps_whole() -> None:
    path = Path("/m/we,ird.gguf")
    spec = server.plan(*request(model=FakeModel(name="file:///m/we,ird.gguf", path=path,
                                               files=(path,))))  # fmt: skip
    assert flag_value(list(spec.command), "--alias") == "we_ird"
    assert flag_value(list(spec.command), "--model") == "/models/we,ird.gguf"
    mount = flag_value(spec.podman_argv(), "--mount")
    assert mount == 'type=bind,"src=/m/we,ird.gguf","dst=/models/we,ird.gguf",ro'


def test_a_chosen_alias_with_a_comma_is_refused() -> None:
    with pytest.raises(VkramaError) as caught:
        server.plan(*request(alias="a,b"))
    assert caught.value.status == ExitStatus.USAGE
    assert caught.value.hint == "pick a name without commas, e.g. 'a_b'"


def test_a_quote_in_a_mount_path_is_doubled_the_csv_way() -> None:
    path = Path('/m/say "hi".gguf')
    spec = server.plan(*request(model=FakeModel(name="x", path=path, files=(path,))))
    assert flag_value(spec.podman_argv(), "--mount") == (
        'type=bind,"src=/m/say ""hi"".gguf","dst=/models/say ""hi"".gguf",ro'
    )


def test_api_key_goes_to_a_mounted_secret_never_to_env_argv_or_labels() -> None:
    spec = server.plan(*request(api_key="sk-very-secret"))
    (secret,) = spec.secrets
    assert (secret.target, secret.uid, secret.gid, secret.mode) == (
        "/run/secrets/api-key",
        1000,
        1000,
        0o400,
    )
    assert secret.name.startswith("vkrama-tiny-8099-api-key-")
    assert flag_value(list(spec.command), "--api-key-file") == "/run/secrets/api-key"
    assert "/run/secrets" in spec.tmpfs
    shown = [spec.podman_command(detach=True), json.dumps(spec.env), json.dumps(spec.labels)]
    assert all("sk-very-secret" not in text for text in shown)


def test_serve_containers_stop_within_a_second() -> None:
    assert server.plan(*request()).stop_timeout == 1


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        pytest.param("127.0.0.1", 8080, "http://127.0.0.1:8080", id="loopback-is-used-as-is"),
        pytest.param(
            "0.0.0.0", 9000, "http://127.0.0.1:9000", id="wildcard-is-reached-on-loopback"
        ),
        pytest.param("::1", 9000, "http://[::1]:9000", id="ipv6-is-bracketed"),
    ],
)
def test_base_url(host: str, port: int, expected: str) -> None:
    assert server.base_url(host, port) == expected


def test_wider_host_publishes_there() -> None:
    command = server.plan(*request(host="0.0.0.0")).podman_command()
    assert "--publish 0.0.0.0:8099:8080" in command


def test_pick_port_auto_returns_a_free_port() -> None:
    port = server.pick_port("127.0.0.1", "auto")
    assert port > 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_pick_port_refuses_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(VkramaError) as caught:
            server.pick_port("127.0.0.1", port)
    assert caught.value.status == ExitStatus.PORT_IN_USE
    assert str(port) in caught.value.message


def test_pick_port_keeps_a_free_port() -> None:
    free = server.pick_port("127.0.0.1", "auto")
    assert server.pick_port("127.0.0.1", free) == free


class FakeLlamaServer(BaseHTTPRequestHandler):
    """Answers like llama-server: /health 503 until `ready_after` polls, then 200."""

    polls = 0
    ready_after = 3
    alias = "tiny"

    def do_GET(self) -> None:
        cls = type(self)
        if self.path == "/health":
            cls.polls += 1
            self.answer(200 if cls.polls > cls.ready_after else 503, {"status": "ok"})
        elif self.path == "/v1/models":
            self.answer(200, {"object": "list", "data": [{"id": cls.alias}]})
        else:
            self.answer(404, {})

    def answer(self, status: int, body: dict[str, object]) -> None:
        send_json(self, status, body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[str]:
    FakeLlamaServer.polls = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeLlamaServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_wait_ready_returns_once_health_and_alias_answer(fake_server: str) -> None:
    ticks: list[Event] = []
    waited = ready.wait_ready(
        fake_server, "tiny", timeout=5, is_running=lambda: True, on_progress=ticks.append
    )
    assert FakeLlamaServer.polls == 4
    # One report per poll that found it not ready yet, and the last one says it is over.
    assert [(e.what, e.done) for e in ticks if isinstance(e, Waiting)] == [
        *[("waiting for the server", False)] * 3,
        ("waiting for the server", True),
    ]
    assert len(ticks) == 4
    assert waited < 1


def test_wait_ready_times_out_when_the_alias_is_never_listed(fake_server: str) -> None:
    with pytest.raises(VkramaError) as caught:
        ready.wait_ready(fake_server, "other", timeout=0.3, is_running=lambda: True)
    assert caught.value.status == ExitStatus.TIMEOUT


def test_wait_ready_stops_when_the_container_exits() -> None:
    port = server.pick_port("127.0.0.1", "auto")  # nothing listens there
    with pytest.raises(VkramaError) as caught:
        ready.wait_ready(f"http://127.0.0.1:{port}", "tiny", timeout=10, is_running=lambda: False)
    assert caught.value.status == ExitStatus.CONTAINER_EXITED


HOME = Path("/home/u/.local/share/vkrama")


NV_PATH, NV_KEEP = "__GL_SHADER_DISK_CACHE_PATH", "__GL_SHADER_DISK_CACHE_SKIP_CLEANUP"


@pytest.mark.parametrize(
    ("backend", "driver", "host_dir", "env"),
    [
        ("vulkan", "lavapipe", HOME / "cache" / "mesa", {"MESA_SHADER_CACHE_DIR": "/cache/mesa"}),
        ("cuda", None, HOME / "cache" / "cuda", {"CUDA_CACHE_PATH": "/cache/cuda"}),
        ("vulkan", "nvidia", HOME / "cache" / "nvidia", {NV_PATH: "/cache/nvidia", NV_KEEP: "1"}),
        (
            "vulkan",
            "radv+nvidia",
            HOME / "cache" / "mesa",
            {"MESA_SHADER_CACHE_DIR": "/cache/mesa", NV_PATH: "/cache/mesa", NV_KEEP: "1"},
        ),
    ],
    ids=[
        "vulkan-keeps-mesa-shaders",
        "cuda-keeps-jit-kernels",
        "vulkan-on-nvidia-keeps-nvidia-pipelines-uncleaned",
        "vulkan-split-over-mesa-and-nvidia-keeps-both",
    ],
)
def test_gpu_backends_get_a_writable_compile_cache(
    backend: str, driver: str | None, host_dir: Path, env: dict[str, str]
) -> None:
    cache = compile_cache.for_backend(HOME, backend, driver)
    assert cache is not None and cache.host_dir == host_dir
    choice = replace(LAVAPIPE, backend=backend, driver=driver)
    spec = server.plan(*request(choice=choice, compile_cache=cache))
    assert Mount(host_dir, cache.target, read_only=False) in spec.mounts
    cache_vars = ("MESA_SHADER_CACHE_DIR", "CUDA_CACHE_PATH", NV_PATH, NV_KEEP)
    assert {k: v for k, v in spec.env.items() if k in cache_vars} == env
    assert [m.read_only for m in spec.mounts if m.target.startswith("/models/")] == [True]


@pytest.mark.parametrize("backend", ["cpu", "rocm", "oneapi"])
def test_backends_that_compile_nothing_at_start_get_no_cache(backend: str) -> None:
    assert compile_cache.for_backend(HOME, backend) is None
