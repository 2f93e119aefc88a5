"""Starting an RPC worker: rpc-server in a backend's image, until it listens.

Stage: serve, over `rpc` (plan) and `session.start_until` (start, wait, clean up). Never
leaves a container behind when the worker does not come up. Must not print.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vkrama.progress import NULL, Reporter, Step
from vkrama.serve import rpc
from vkrama.serve.containers import start_until

if TYPE_CHECKING:
    from vkrama.backends import Choice
    from vkrama.config import Settings
    from vkrama.engine import Engine


@dataclass(frozen=True)
class RunningWorker:
    id: str
    name: str
    endpoint: rpc.Endpoint
    choice: Choice
    ready_s: float


def start_worker(
    settings: Settings,
    engine: Engine,
    request: rpc.WorkerRequest,
    timeout: float,
    on_progress: Reporter = NULL,
) -> RunningWorker:
    """Start rpc-server and wait until it listens; on failure its container goes and the
    error carries its last log lines (`containers.ServerFailed`)."""
    rpc.check_port_free(request.host, request.port)
    planned = rpc.prepare_worker(settings, request, engine, on_progress)

    def wait(container: str) -> float:
        return rpc.wait_answering(
            planned.endpoint,
            timeout,
            is_running=lambda: engine.alive(container),
            on_progress=on_progress,
            what=f"starting {planned.spec.name}",
        )

    container, waited = start_until(engine, planned.spec, wait)
    on_progress(Step(f"rpc-server listening in {waited:.2f} s", detail=True))
    return RunningWorker(container, planned.spec.name or container[:12], planned.endpoint,
                         planned.choice, waited)  # fmt: skip
