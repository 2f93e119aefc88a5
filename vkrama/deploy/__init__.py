"""Hand the serve plan to the engines people already run: Kubernetes, quadlets, compose.

Stage: deploy, after serve.plan / bench.plan. Takes the `Planned` that `vkrama serve` would
start (its `ContainerSpec`, `Choice` and model) and renders it for another engine; the
choices themselves (backend, driver, devices, environment, hardening) are never made again
here. `write` is the only function that touches the file system, and it writes each file
whole (temporary file, then rename) so that a failure leaves nothing half-written. Must not
start containers, talk to podman or print.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from vkrama import __version__
from vkrama.engine.spec import LABEL_PREFIX, ContainerSpec
from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import NULL, Reporter

if TYPE_CHECKING:
    from vkrama.config import Settings
    from vkrama.serve.plan import ServeRequest
    from vkrama.serve.session import Planned

KINDS = ("kube", "quadlet", "compose")
# The health request as a command, for engines whose health checks run inside the
# container: the images carry bash (Debian's essential set) but neither curl nor wget.
HEALTH_PROBE = (
    "bash",
    "-c",
    "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 "
    "&& head -n1 <&3 | grep -q ' 200 '",
)
HEALTH_PATH = "/health"
# Kubernetes names (DNS-1123 labels): lower-case alphanumerics and '-', at most 63.
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")


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
        return {**self.spec.labels, f"{LABEL_PREFIX}version": __version__}

    @property
    def secret_env(self) -> list[str]:
        return sorted(self.spec.secret_env)

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


def for_serve(
    settings: Settings,
    request: ServeRequest,
    kind: str,
    out_dir: Path,
    replicas: int = 1,
    on_progress: Reporter = NULL,
) -> Generated:
    """Plan exactly what `vkrama serve` would run (starting nothing) and render it as `kind`."""
    from vkrama.serve import session

    planned = session.plan(settings, request, on_progress=on_progress)
    return render(kind, workload(planned, request.model, replicas, request.api_key_file), out_dir)


def dns_label(text: str) -> str:
    """`text` as a Kubernetes object name: vkrama-Tiny_Q4.gguf-8080 → vkrama-tiny-q4-gguf-8080."""
    name = _DNS_LABEL.sub("-", text.lower()).strip("-")[:63].rstrip("-")
    return name or "vkrama"


@dataclass(frozen=True)
class Generated:
    """Files to write (name → text) and the commands that start, inspect and stop them."""

    files: dict[str, str]
    start: list[str]
    # Writable bind-mount sources (compile caches) the engine will not create itself.
    host_dirs: tuple[Path, ...] = ()


def writable_sources(spec: ContainerSpec) -> tuple[Path, ...]:
    return tuple(mount.source for mount in spec.mounts if not mount.read_only)


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]  # PyYAML ships no stubs
    def ignore_aliases(self, data: object) -> bool:
        return True  # repeated values written out, never as &anchors a reader must follow


def _block_text(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    """Scripts as literal blocks, readable in the file, not one escaped line."""
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _block_text)


def yaml_text(docs: list[dict[str, Any]], header: list[str]) -> str:
    """YAML documents, key order kept, under a comment header saying what they are."""
    lines = [f"# {line}" for line in header]
    body = "---\n".join(yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000) for doc in docs)
    return "\n".join(lines) + "\n" + body


def render(kind: str, work: Workload, out_dir: Path) -> Generated:
    """The files `--generate KIND` writes for one server, and how to start them."""
    from vkrama.deploy import compose, kube, quadlet

    renderers = {"kube": kube.serve, "quadlet": quadlet.serve, "compose": compose.serve}
    if kind not in renderers:
        raise VkramaError(
            f"unknown --generate target {kind!r}",
            hint=f"one of: {', '.join(KINDS)}",
            status=ExitStatus.USAGE,
        )
    return renderers[kind](work, out_dir)


def write(generated: Generated, out_dir: Path) -> list[Path]:
    """Write every file whole into `out_dir` (created if missing); the paths written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VkramaError(
            f"cannot create {out_dir}: {exc.strerror}",
            hint="pick another directory with -o DIR",
            status=ExitStatus.USAGE,
        ) from None
    staged: list[tuple[str, Path]] = []
    try:
        for name, text in generated.files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out_dir)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, 0o644)
            staged.append((tmp, out_dir / name))
    except OSError as exc:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise VkramaError(
            f"cannot write into {out_dir}: {exc.strerror}",
            hint="pick another directory with -o DIR",
            status=ExitStatus.USAGE,
        ) from None
    for tmp, final in staged:
        os.replace(tmp, final)
    for directory in generated.host_dirs:
        if not directory.is_dir():
            directory.mkdir(parents=True)
            # Like serve's compile cache: the container user maps to another uid rootless.
            directory.chmod(0o777)
    return [final for _, final in staged]
