"""`vkrama serve/stop` without podman: dry-run transcripts, flag errors, table helpers."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from vkrama import __version__
from vkrama.cli import servers as serve_cli
from vkrama.cli.console import to_json
from vkrama.engine import ContainerStatus
from vkrama.engine.spec import clamped_ulimits
from vkrama.serve import containers as servers

Vkrama = Callable[..., Any]  # the `vkrama` fixture: runs the CLI, returns a Result


def expected_cpu_command(model: Path, sha256: str, port: int) -> str:
    limits = clamped_ulimits()
    return (
        f"podman run --detach --name vkrama-tiny-{port} --label vkrama.alias=tiny"
        " --label vkrama.backend=cpu --label vkrama.device=CPU"
        f" --label vkrama.model=file://{model} --label vkrama.model_path={model}"
        f" --label vkrama.model_sha256={sha256}"
        f" --label vkrama.role=serve --label vkrama.url=http://127.0.0.1:{port}"
        f" --label vkrama.version={__version__}"
        " --user 1000:1000 --cap-drop all --security-opt no-new-privileges --read-only"
        f" --tmpfs /tmp:rw,nosuid,nodev --ulimit nofile={limits['nofile']}:{limits['nofile']}"
        f" --ulimit nproc={limits['nproc']}:{limits['nproc']} --env XDG_CACHE_HOME=/tmp/.cache"
        f" --mount type=bind,src={model},dst=/models/tiny.gguf,ro"
        f" --stop-timeout 1 --publish 127.0.0.1:{port}:8080 localhost/vkrama/cpu:latest"
        " llama-server --model /models/tiny.gguf --host 0.0.0.0 --port 8080 --alias tiny"
        " --n-gpu-layers 0"
    )


def test_dry_run_prints_the_exact_podman_command(vkrama: Vkrama, tiny_model: Path) -> None:
    import hashlib

    sha256 = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    done = vkrama("--dry-run", "serve", str(tiny_model), "--backend", "cpu", "--port", "8123")
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected_cpu_command(tiny_model, sha256, 8123) + "\n"
    assert done.stderr == ""  # a backend the user named needs no explaining


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        pytest.param(
            ["--host", "0.0.0.0"], "--publish 0.0.0.0:8123:8080", id="host-flag-widens-publishing"
        ),
        pytest.param(
            ["--", "--temp", "0"],
            "--n-gpu-layers 0 --temp 0",
            id="args-after-dashes-reach-llama-server",
        ),
        pytest.param(
            ["--ctx-size", "256", "--parallel", "2"],
            "--ctx-size 256 --parallel 2",
            id="ctx-size-and-parallel",
        ),
        pytest.param(
            ["--alias", "chat", "--name", "mine"],
            "--name mine --label vkrama.alias=chat",
            id="alias-and-name",
        ),
        pytest.param(
            ["--backend", "vulkan", "--vk-driver", "lavapipe"],
            "--env GGML_VK_VISIBLE_DEVICES=0",
            id="lavapipe-makes-ggml-see-the-cpu-vulkan-device",
        ),
        pytest.param(
            ["--backend", "vulkan", "--vk-driver", "lavapipe"],
            "localhost/vkrama/vulkan:latest",
            id="vulkan-uses-the-vulkan-image",
        ),
    ],
)
def test_dry_run_flags(vkrama: Vkrama, tiny_model: Path, flags: list[str], shown: str) -> None:
    args = ["--dry-run", "serve", str(tiny_model), "--port", "8123"]
    if "--backend" not in flags:
        args += ["--backend", "cpu"]
    done = vkrama(*args, *flags)
    assert done.returncode == 0, done.stderr
    assert shown in done.stdout


def test_dry_run_with_port_auto_shows_a_real_free_port(vkrama: Vkrama, tiny_model: Path) -> None:
    done = vkrama("--dry-run", "serve", str(tiny_model), "--backend", "cpu", "--port", "auto")
    publish = done.stdout.split("--publish ")[1].split()[0]
    host, port, inside = publish.split(":")
    assert (host, inside) == ("127.0.0.1", "8080")
    assert int(port) > 0


def test_dry_run_passes_the_api_key_as_a_secret_it_never_prints(
    vkrama: Vkrama, tiny_model: Path, tmp_path: Path
) -> None:
    key = tmp_path / "key"
    key.write_text("sk-dry-run-secret\n# comment lines after the key are ignored\n")
    done = vkrama(
        "--dry-run", "serve", str(tiny_model), "--backend", "cpu", "--api-key-file", str(key)
    )
    assert done.returncode == 0, done.stderr
    create, run = done.stdout.splitlines()
    secret = re.fullmatch(rf"head -n 1 {key} \| podman secret create (\S+) -", create)
    assert secret, create
    assert (
        f"--secret {secret[1]},type=mount,target=/run/secrets/api-key,uid=1000,gid=1000,mode=0400"
        in run
    )
    assert run.endswith("--api-key-file /run/secrets/api-key")
    assert "sk-dry-run-secret" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        pytest.param(
            ["serve", "MODEL", "--backend", "rocm"],
            8,
            "Error: rocm is unavailable here",
            id="rocm-without-amd-gpu",
        ),
        pytest.param(
            ["serve", "MODEL", "--backend", "best"],
            5,
            "Error: no bench results for",
            id="best-without-bench-results",
        ),
        pytest.param(
            ["serve", "MODEL", "--api-key-file", "/nonexistent/key"],
            2,
            "Error: cannot read API key file",
            id="missing-api-key-file",
        ),
        pytest.param(
            ["serve", "MODEL", "--api-key-file", "EMPTY"],
            2,
            "Error: API key file",
            id="empty-api-key-file",
        ),
        pytest.param(
            ["serve", "/nonexistent/model.gguf"],
            5,
            "Error: /nonexistent/model.gguf: no such file",
            id="missing-model-file",
        ),
        pytest.param(
            ["serve", "MODEL", "--port", "70000"],
            2,
            "is not a port (1-65535) or 'auto'",
            id="port-out-of-range",
        ),
        pytest.param(
            ["serve", "MODEL", "--backend", "metal"],
            2,
            "Invalid value for '--backend'",
            id="unknown-backend",
        ),
    ],
)
def test_serve_refuses_bad_input_before_anything_runs(
    vkrama: Vkrama, tiny_model: Path, tmp_path: Path, args: list[str], status: int, message: str
) -> None:
    empty = tmp_path / "empty-key"
    empty.write_text("\n")
    args = [str(tiny_model) if a == "MODEL" else str(empty) if a == "EMPTY" else a for a in args]
    done = vkrama("--dry-run", *args)
    assert done.returncode == status, done.stderr
    assert message in done.stderr
    assert done.stdout == ""


def test_stop_without_names_says_how() -> None:
    from click.testing import CliRunner

    from vkrama.cli import cli

    result = CliRunner().invoke(cli, ["stop"])
    assert result.exception is not None
    assert "vkrama stop --all" in str(getattr(result.exception, "hint", ""))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(None, "-", id="not-running-has-no-uptime"),
        pytest.param(42.9, "42s", id="seconds"),
        pytest.param(3 * 60 + 5, "3m05s", id="minutes"),
        pytest.param(2 * 3600 + 7 * 60, "2h07m", id="hours"),
    ],
)
def test_uptime_text(seconds: float | None, text: str) -> None:
    assert serve_cli.uptime_text(seconds) == text


def row(**overrides: Any) -> servers.ServerRow:
    values: dict[str, Any] = {
        "name": "vkrama-tiny-8080",
        "id": "c0ffee" * 10,
        "model": "tiny",
        "alias": "tiny",
        "backend": "vulkan",
        "driver": "lavapipe",
        "device": "llvmpipe (lavapipe)",
        "url": "http://127.0.0.1:8080",
        "state": "running",
        "started_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
    }
    values.update(overrides)
    return servers.ServerRow(**values)


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        pytest.param({}, "llvmpipe (lavapipe)", id="driver-already-in-the-device-label"),
        pytest.param(
            {"device": "AMD Radeon RX 7900 XTX", "driver": "radv"},
            "AMD Radeon RX 7900 XTX (radv)",
            id="driver-appended",
        ),
        pytest.param(
            {"backend": "cpu", "device": "CPU", "driver": ""}, "CPU", id="cpu-has-no-driver"
        ),
    ],
)
def test_device_text(overrides: dict[str, Any], text: str) -> None:
    assert serve_cli.device_text(row(**overrides)) == text


def test_ps_json_row_has_every_field_and_uptime() -> None:
    started = datetime(2026, 1, 1, tzinfo=timezone.utc)
    item = to_json(row(started_at=started, state=ContainerStatus.RUNNING))
    assert list(item) == [
        "name",
        "id",
        "model",
        "alias",
        "backend",
        "driver",
        "device",
        "url",
        "state",
        "started_at",
        "uptime_s",
    ]
    assert item["started_at"] == "2026-01-01T00:00:00+00:00"
    assert isinstance(item["uptime_s"], float) and item["state"] == "running"
    assert row(started_at=started).uptime_s(started + timedelta(seconds=90)) == 90
    exited = to_json(row(state=ContainerStatus.EXITED, driver=""))
    assert (exited["uptime_s"], exited["driver"], exited["state"]) == (None, None, "exited")
