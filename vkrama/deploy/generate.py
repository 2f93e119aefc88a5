"""`--generate KIND`: the serve plan rendered for Kubernetes, a quadlet or compose.

Stage: deploy, after serve.plan / bench.plan. Plans exactly what `vkrama serve` would run
(starting nothing) and hands it to the renderer of one kind. Must not start containers,
talk to podman or print.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vkrama.deploy import compose, kube, lws, quadlet, split
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
    rpc_workers: int = 0,
) -> Generated:
    """Plan exactly what `vkrama serve` would run (starting nothing) and render it as `kind`;
    with `rpc_workers`, as a leader and that many ggml RPC workers (`split`)."""
    from vkrama.serve import session

    if rpc_workers:
        kinds = {"kube": lws.serve, "quadlet": quadlet.rpc_split, "compose": compose.rpc_split}
        renderer = kinds[_known(kind)]
        parts = split.plan(settings, request, rpc_workers, replicas, kind != "kube", on_progress)
        return renderer(parts, out_dir)
    planned = session.plan(settings, request, on_progress=on_progress)
    return render(kind, workload(planned, request.model, replicas, request.api_key_file), out_dir)


def render(kind: str, work: Workload, out_dir: Path) -> Generated:
    """The files `--generate KIND` writes for one server, and how to start them."""
    renderers = {"kube": kube.serve, "quadlet": quadlet.serve, "compose": compose.serve}
    return renderers[_known(kind)](work, out_dir)


def _known(kind: str) -> str:
    if kind not in KINDS:
        raise VkramaError(
            f"unknown --generate target {kind!r}",
            hint=f"one of: {', '.join(KINDS)}",
            status=ExitStatus.USAGE,
        )
    return kind
