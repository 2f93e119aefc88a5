"""`--generate KIND`: the serve plan rendered for Kubernetes, a quadlet or compose.

Stage: deploy, after serve.plan / bench.plan. Plans exactly what `vkrama serve` would run
(starting nothing) and hands it to the renderer of one kind. Must not start containers,
talk to podman or print.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vkrama.deploy import compose, kube, quadlet
from vkrama.deploy.files import Generated
from vkrama.deploy.workloads import Workload, workload
from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import NULL, Reporter

if TYPE_CHECKING:
    from vkrama.config import Settings
    from vkrama.serve.plan import ServeRequest

KINDS = ("kube", "quadlet", "compose")


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


def render(kind: str, work: Workload, out_dir: Path) -> Generated:
    """The files `--generate KIND` writes for one server, and how to start them."""
    renderers = {"kube": kube.serve, "quadlet": quadlet.serve, "compose": compose.serve}
    if kind not in renderers:
        raise VkramaError(
            f"unknown --generate target {kind!r}",
            hint=f"one of: {', '.join(KINDS)}",
            status=ExitStatus.USAGE,
        )
    return renderers[kind](work, out_dir)
