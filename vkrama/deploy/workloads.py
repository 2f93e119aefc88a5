"""What a deploy renders: the `Workload` a serve plan becomes, and the facts every renderer
shares (its name, health check, writable mounts).

Stage: deploy, after serve.plan. Takes the `Planned` that `vkrama serve` would start (its
`ContainerSpec`, `Choice` and model); the choices themselves (backend, driver, devices,
environment, hardening) are never made again here. Pure: must not touch files, start
containers, talk to podman or print.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vkrama import __version__
from vkrama.engine.spec import LABEL_PREFIX, ContainerSpec

if TYPE_CHECKING:
    from vkrama.serve.session import Planned

HEALTH_PATH = "/health"
# Kubernetes names (DNS-1123 labels): lower-case alphanumerics and '-', at most 63.
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")


def health_probe(host: str = "127.0.0.1", port: int = 8080) -> tuple[str, ...]:
    """The health request as a command, for engines whose health checks run inside the
    container: the images carry bash (Debian's essential set) but neither curl nor wget."""
    return (
        "bash",
        "-c",
        f"exec 3<>/dev/tcp/{host}/{port} && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 "
        "&& head -n1 <&3 | grep -q ' 200 '",
    )


HEALTH_PROBE = health_probe()


@dataclass(frozen=True)
class Workload:
    """One planned server and the few facts about it that the spec does not carry."""

    spec: ContainerSpec
    backend: str
    driver: str | None
    gpu_kernel_driver: str | None  # amdgpu, i915, xe, nvidia, nouveau; None without a GPU
    model_ref: str  # what the user typed (oci://… is delivered as an image volume)
    model_source: str  # hf, oci, file, …
    model_size: int  # bytes, every part together
    host: str
    host_port: int
    replicas: int = 1
    gpu_count: int = 1  # several: one model split over them (`--gpu 0,1`, `--gpu all`)
    # The user's key file: compose reads it as a file secret (the key itself is never copied).
    api_key_file: Path | None = None

    @property
    def secret_name(self) -> str:
        """The Kubernetes Secret / podman secret the API key is stored in, under this name."""
        return f"{self.name}-api-key"

    @property
    def name(self) -> str:
        return dns_label(self.spec.name or "vkrama")

    @property
    def labels(self) -> dict[str, str]:
        """The plan's labels and the version label the engine adds to whatever it runs
        (`vkrama ps` lists containers that carry it)."""
        return versioned(self.spec.labels)

    @property
    def secret_env(self) -> list[str]:
        return sorted(self.spec.secret_env)

    @property
    def health_probe(self) -> tuple[str, ...]:
        """The probe of this server: on the host's network (a leader reaching its workers)
        it listens on the host address and port itself, else on 8080 in its own."""
        if self.spec.network == "host":
            wildcard = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
            host = wildcard.get(self.host, self.host)
            return health_probe(host, self.host_port)
        return HEALTH_PROBE

    @property
    def oci_model(self) -> str | None:
        """The registry reference of an oci:// model, which clusters pull themselves."""
        if self.model_source == "oci" and self.model_ref.startswith("oci://"):
            return self.model_ref.removeprefix("oci://")
        return None


def workload(
    planned: Planned, model_ref: str, replicas: int = 1, api_key_file: Path | None = None
) -> Workload:
    """The deploy view of what `vkrama serve` planned."""
    if planned.choice is None or planned.model is None:
        raise ValueError("a Planned from serve.session.prepare carries its choice and model")
    spec = planned.spec
    port = spec.ports[0]
    gpu = planned.choice.gpu
    return Workload(
        spec=spec,
        backend=planned.choice.backend,
        driver=planned.choice.driver,
        gpu_kernel_driver=gpu.kernel_driver if gpu else None,
        model_ref=model_ref,
        model_source=planned.model.source,
        model_size=planned.model.size,
        host=port.host_ip,
        host_port=port.host_port,
        replicas=replicas,
        gpu_count=max(len(planned.choice.gpu_indices), 1),
        api_key_file=api_key_file.resolve() if api_key_file else None,
    )


def versioned(labels: dict[str, str]) -> dict[str, str]:
    """`labels` and the version label the engine adds to whatever it runs (`vkrama ps`
    lists the containers that carry it)."""
    return {**labels, f"{LABEL_PREFIX}version": __version__}


def dns_label(text: str) -> str:
    """`text` as a Kubernetes object name: vkrama-Tiny_Q4.gguf-8080 → vkrama-tiny-q4-gguf-8080."""
    name = _DNS_LABEL.sub("-", text.lower()).strip("-")[:63].rstrip("-")
    return name or "vkrama"


def writable_sources(spec: ContainerSpec) -> tuple[Path, ...]:
    return tuple(mount.source for mount in spec.mounts if not mount.read_only)
