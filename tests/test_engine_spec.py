"""ContainerSpec's two renderings agree: the --dry-run argv starts the container the engine
would start through the API (labels incl. vkrama.version, mounts, devices, env, tmpfs, user,
caps, ports, ulimits), so a container started from a printed command is one `ps` finds."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from vkrama import __version__
from vkrama.engine.spec import ContainerSpec, Mount, PortMapping, SecretFile

FULL = ContainerSpec(
    image="localhost/vkrama/vulkan:latest",
    command=("llama-server", "--port", "8080"),
    name="vkrama-full-8123",
    entrypoint=("/usr/bin/env", "--"),
    labels={"vkrama.role": "serve", "vkrama.url": "http://127.0.0.1:8123"},
    env={"XDG_CACHE_HOME": "/tmp/.cache", "LLAMA_API_KEY": "sk-secret"},
    devices=("/dev/dri/renderD128", "nvidia.com/gpu=0"),
    group_add=("44", "993"),
    mounts=(
        Mount(Path("/m/we,ird.gguf"), "/models/we,ird.gguf"),
        Mount(Path("/c"), "/cache", False),
    ),
    ports=(PortMapping(8080, 8123, "127.0.0.1"),),
    user="1000:1000",
    read_only_rootfs=True,
    tmpfs=("/tmp",),
    ulimits={"nofile": 1024, "nproc": 512},
    remove=True,
    secret_env=frozenset({"LLAMA_API_KEY"}),
    secrets=(SecretFile("vkrama-key-1", "/run/secrets/key", 1000, 1000, 0o400),),
    stop_timeout=1,
    network="none",
)
BARE = ContainerSpec(image="debian:sid", cap_drop_all=False, no_new_privileges=False, ulimits={})


def from_argv(argv: list[str]) -> dict[str, Any]:
    """Read a `podman run` argv back into the API body's terms (only what vkrama writes)."""
    assert argv[:2] == ["podman", "run"]
    body: dict[str, Any] = {
        "labels": {}, "env": {}, "devices": [], "groups": [], "mounts": [], "portmappings": [],
        "cap_drop": [], "no_new_privileges": False, "read_only_filesystem": False,
        "r_limits": [], "remove": False,
    }  # fmt: skip
    args = iter(argv[2:])
    for arg in args:
        if not arg.startswith("--"):
            body["image"], body["command"] = arg, list(args)
            break
        if arg in ("--detach",):
            continue
        if arg in ("--rm", "--read-only"):
            body["remove" if arg == "--rm" else "read_only_filesystem"] = True
            continue
        value = next(args)
        if arg == "--label":
            key, _, text = value.partition("=")
            body["labels"][key] = text
        elif arg == "--env":
            key, _, text = value.partition("=")
            body["env"][key] = text
        elif arg == "--name":
            body["name"] = value
        elif arg == "--user":
            body["user"] = value
        elif arg == "--cap-drop":
            body["cap_drop"].append(value)
        elif arg == "--security-opt":
            assert value == "no-new-privileges"
            body["no_new_privileges"] = True
        elif arg == "--device":
            body["devices"].append({"path": value})
        elif arg == "--group-add":
            body["groups"].append(value)
        elif arg == "--tmpfs":
            path, _, options = value.partition(":")
            body["mounts"].append(
                {"type": "tmpfs", "source": "tmpfs", "destination": path,
                 "options": options.split(",")}
            )  # fmt: skip
        elif arg == "--mount":
            record = next(csv.reader([value]))  # podman reads the value as one CSV record
            fields = dict(f.partition("=")[::2] for f in record if "=" in f)
            assert fields.pop("type") == "bind"
            body["mounts"].append(
                {"type": "bind", "source": fields["src"], "destination": fields["dst"],
                 "options": ["rbind", "ro" if "ro" in record else "rw"]}
            )  # fmt: skip
        elif arg == "--secret":
            secret, *secret_options = value.split(",")
            given = dict(o.partition("=")[::2] for o in secret_options)
            assert given.pop("type") == "mount"
            body.setdefault("secrets", []).append(
                {"Source": secret, "Target": given["target"], "UID": int(given["uid"]),
                 "GID": int(given["gid"]), "Mode": int(given["mode"], 8)}
            )  # fmt: skip
        elif arg == "--network":
            body["netns"] = {"nsmode": value}
        elif arg == "--stop-timeout":
            body["stop_timeout"] = int(value)
        elif arg == "--publish":
            host_ip, host_port, container_port = value.rsplit(":", 2)
            body["portmappings"].append(
                {"host_ip": host_ip, "host_port": int(host_port),
                 "container_port": int(container_port), "protocol": "tcp"}
            )  # fmt: skip
        elif arg == "--ulimit":
            name, _, amounts = value.partition("=")
            soft, hard = amounts.split(":")
            body["r_limits"].append({"type": name, "soft": int(soft), "hard": int(hard)})
        elif arg == "--entrypoint":
            body["entrypoint"] = json.loads(value)
        else:
            raise AssertionError(f"the test does not know {arg}")
    return body


def normalised(body: dict[str, Any]) -> dict[str, Any]:
    """Order-free: podman does not care in which order labels, mounts or limits come."""
    out = dict(body)
    for key in ("mounts", "r_limits", "devices", "portmappings"):
        out[key] = sorted(out[key], key=json.dumps)
    return out


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(FULL, id="serve-like-spec-with-every-field"),
        pytest.param(BARE, id="bare-spec-without-the-secure-defaults"),
    ],
)
def test_the_dry_run_argv_and_the_api_body_describe_the_same_container(
    spec: ContainerSpec,
) -> None:
    body = spec.api_body()
    shown = from_argv(spec.podman_argv(detach=True))
    # The printed command masks secrets; the API gets them.
    for key in spec.secret_env:
        assert shown["env"][key] == "***"
        shown["env"][key] = body["env"][key]
    assert normalised(shown) == normalised(body)


def test_both_renderings_carry_the_version_label_that_ps_and_stop_filter_on() -> None:
    assert FULL.api_body()["labels"]["vkrama.version"] == __version__
    assert f"vkrama.version={__version__}" in FULL.podman_argv()


def test_the_printed_command_never_shows_a_secret() -> None:
    assert "sk-secret" not in FULL.podman_command()
    assert FULL.api_body()["env"]["LLAMA_API_KEY"] == "sk-secret"
