"""ContainerSpec: a complete, engine-neutral description of one container to run.

Stage: produced by the planning stages (serve.plan, bench.plan), consumed by the engine.
Its two renderings sit side by side here: `podman_argv` (what --dry-run prints) and
`api_body` (what the engine sends to podman's API); tests/test_engine_spec.py checks that
they say the same. Pure data: must not import podman-py or touch the system, except
`clamped_ulimits`, which reads this process's own rlimits so that a container never asks
for more than the host allows (sandboxes without CAP_SYS_RESOURCE refuse that).
"""

from __future__ import annotations

import csv
import io
import json
import resource
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vkrama import __version__

LABEL_PREFIX = "vkrama."
# Every container `Engine.run` makes carries this label, unique to the call: cleanup finds
# it by the label even when an interrupt came before podman returned its id.
LAUNCH_LABEL = f"{LABEL_PREFIX}launch"
# Every container vkrama starts carries this label: `ps`, `stop` and `engine.containers`
# filter on it, so a container started from a printed --dry-run command is found too.
VERSION_LABEL = f"{LABEL_PREFIX}version"
# Writable scratch space on a read-only root: no setuid binaries, no device files.
TMPFS_OPTIONS = ("rw", "nosuid", "nodev")

# What podman asks for by default is far above most hosts' hard limits. nproc counts every
# process of the user, so a few thousand is plenty; above ~32k runc was refused in
# sandboxes whose `ulimit -Hu` claimed more.
WANTED_ULIMITS = {"nofile": 65536, "nproc": 4096}
_RLIMIT = {"nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC}


def clamped_ulimits() -> dict[str, int]:
    """The ulimits vkrama asks for, lowered to this host's hard limits."""
    limits = {}
    for name, wanted in WANTED_ULIMITS.items():
        _, hard = resource.getrlimit(_RLIMIT[name])
        limits[name] = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    return limits


@dataclass(frozen=True)
class Mount:
    """A bind mount; read-only unless said otherwise (models are never writable)."""

    source: Path
    target: str
    read_only: bool = True


def mount_option(mount: Mount) -> str:
    """`--mount`'s value for a bind mount. Podman reads it as one CSV record, so a field
    with a comma or a quote (a model called `we,ird.gguf`) is quoted the CSV way."""
    fields = ["type=bind", f"src={mount.source}", f"dst={mount.target}"]
    if mount.read_only:
        fields.append("ro")
    line = io.StringIO()
    csv.writer(line, lineterminator="").writerow(fields)
    return line.getvalue()


@dataclass(frozen=True)
class SecretFile:
    """A podman secret mounted as a file. Its value is no part of the spec: `podman
    inspect`, the environment and every process's argv show only the name and the path."""

    name: str
    target: str
    uid: int = 0
    gid: int = 0
    mode: int = 0o400


@dataclass(frozen=True)
class PortMapping:
    """Publish `container_port` on `host_ip:host_port` (loopback unless asked otherwise)."""

    container_port: int
    host_port: int
    host_ip: str = "127.0.0.1"


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to start one container; secure defaults are the field defaults."""

    image: str
    command: tuple[str, ...] = ()
    name: str | None = None
    entrypoint: tuple[str, ...] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    devices: tuple[str, ...] = ()  # host device paths or CDI names (nvidia.com/gpu=0)
    group_add: tuple[str, ...] = ()  # numeric gids, so they need not exist in the image
    mounts: tuple[Mount, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    # None: podman's default network; "none": only loopback, for containers that talk to
    # nobody (rootless, any network costs a slirp4netns process and needs /dev/net/tun).
    network: str | None = None
    user: str | None = None
    cap_drop_all: bool = True
    no_new_privileges: bool = True
    read_only_rootfs: bool = False
    tmpfs: tuple[str, ...] = ()
    ulimits: dict[str, int] = field(default_factory=clamped_ulimits)
    remove: bool = False
    # Secret env values are passed to the container but replaced by `***` in every
    # rendering (dry-run, logs of vkrama itself).
    secret_env: frozenset[str] = frozenset()
    secrets: tuple[SecretFile, ...] = ()
    # Seconds podman waits after the stop signal before SIGKILL (None: podman's 10).
    stop_timeout: int | None = None

    @property
    def all_labels(self) -> dict[str, str]:
        """The labels both renderings give the container: the spec's and vkrama's version."""
        return {**self.labels, VERSION_LABEL: __version__}

    def podman_argv(self, detach: bool = False) -> list[str]:
        """The equivalent `podman run …` command line; secrets are masked."""
        argv = ["podman", "run"]
        if detach:
            argv.append("--detach")
        if self.remove:
            argv.append("--rm")
        if self.name:
            argv += ["--name", self.name]
        for key, value in sorted(self.all_labels.items()):
            argv += ["--label", f"{key}={value}"]
        if self.user:
            argv += ["--user", self.user]
        if self.cap_drop_all:
            argv += ["--cap-drop", "all"]
        if self.no_new_privileges:
            argv += ["--security-opt", "no-new-privileges"]
        if self.read_only_rootfs:
            argv.append("--read-only")
        for path in self.tmpfs:
            argv += ["--tmpfs", f"{path}:{','.join(TMPFS_OPTIONS)}"]
        for limit, amount in sorted(self.ulimits.items()):
            argv += ["--ulimit", f"{limit}={amount}:{amount}"]
        for device in self.devices:
            argv += ["--device", device]
        for gid in self.group_add:
            argv += ["--group-add", gid]
        for key, value in sorted(self.env.items()):
            shown = "***" if key in self.secret_env else value
            argv += ["--env", f"{key}={shown}"]
        for mount in self.mounts:
            argv += ["--mount", mount_option(mount)]
        for secret in self.secrets:
            argv += ["--secret", f"{secret.name},type=mount,target={secret.target},"
                     f"uid={secret.uid},gid={secret.gid},mode={secret.mode:04o}"]  # fmt: skip
        if self.stop_timeout is not None:
            argv += ["--stop-timeout", str(self.stop_timeout)]
        if self.network is not None:
            argv += ["--network", self.network]
        for port in self.ports:
            argv += ["--publish", f"{port.host_ip}:{port.host_port}:{port.container_port}"]
        if self.entrypoint is not None:
            # podman takes a JSON array for an entrypoint with arguments
            argv += ["--entrypoint", json.dumps(list(self.entrypoint))]
        argv.append(self.image)
        argv += list(self.command)
        return argv

    def podman_command(self, detach: bool = False) -> str:
        """`podman_argv` as one shell-quoted line, for --dry-run."""
        return shlex.join(self.podman_argv(detach))

    def api_body(self) -> dict[str, Any]:
        """The libpod SpecGenerator body (POST /containers/create): `podman_argv`'s twin,
        with secrets in clear (they go to podman, never to a terminal)."""
        mounts: list[dict[str, Any]] = [
            {
                "type": "bind",
                "source": str(m.source),
                "destination": m.target,
                "options": ["rbind", "ro" if m.read_only else "rw"],
            }
            for m in self.mounts
        ]
        mounts += [
            {
                "type": "tmpfs",
                "source": "tmpfs",
                "destination": path,
                "options": list(TMPFS_OPTIONS),
            }
            for path in self.tmpfs
        ]
        body: dict[str, Any] = {
            "image": self.image,
            "command": list(self.command),
            "labels": self.all_labels,
            "env": dict(self.env),
            "devices": [{"path": d} for d in self.devices],
            "groups": list(self.group_add),
            "mounts": mounts,
            "portmappings": [
                {
                    "host_ip": p.host_ip,
                    "host_port": p.host_port,
                    "container_port": p.container_port,
                    "protocol": "tcp",
                }
                for p in self.ports
            ],
            "cap_drop": ["all"] if self.cap_drop_all else [],
            "no_new_privileges": self.no_new_privileges,
            "read_only_filesystem": self.read_only_rootfs,
            "r_limits": [
                {"type": name, "soft": value, "hard": value} for name, value in self.ulimits.items()
            ],
            "remove": self.remove,
        }
        if self.network is not None:
            body["netns"] = {"nsmode": self.network}
        if self.name:
            body["name"] = self.name
        if self.user:
            body["user"] = self.user
        if self.entrypoint is not None:
            body["entrypoint"] = list(self.entrypoint)
        if self.secrets:
            body["secrets"] = [
                {"Source": s.name, "Target": s.target, "UID": s.uid, "GID": s.gid, "Mode": s.mode}
                for s in self.secrets
            ]
        if self.stop_timeout is not None:
            body["stop_timeout"] = self.stop_timeout
        return body
