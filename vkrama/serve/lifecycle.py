"""A server's life: start it, follow it in the foreground, or reuse one already serving.

Stage: serve, over `session` (prepare ─► launch) and `containers`. Holds the policies the
commands share: how long to wait, that a foreground server goes when its follower ends
(Ctrl-C, SIGTERM, the log ending), which exits are an error, and that `run` reuses a
running server of the model or removes the one it started. Must not print: lines go to
the caller's `on_line`, steps to a `Reporter`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vkrama.config import Settings
from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import NULL, Reporter, Step
from vkrama.serve import containers, session
from vkrama.serve.plan import ServeRequest

if TYPE_CHECKING:
    from vkrama.engine import Engine


@dataclass(frozen=True)
class Endpoint:
    """Where a client reaches a server, and the key it needs."""

    url: str
    alias: str
    api_key: str | None = None


def start(
    settings: Settings, engine: Engine, request: ServeRequest, on_progress: Reporter = NULL
) -> session.Running:
    """Resolve, plan, start and wait until the server answers (or raise `ServerFailed`)."""
    planned = session.prepare(settings, request, engine, on_progress=on_progress)
    wait_s = request.timeout if request.timeout is not None else float(settings["serve.timeout"])
    running = session.launch(engine, planned, wait_s, on_progress=on_progress)
    on_progress(Step(f"ready in {running.ready_s:.2f} s", detail=True))
    warmed = running.warmed
    if warmed is not None and warmed.skipped:
        on_progress(Step(f"not warmed up: {warmed.skipped}"))
    elif warmed is not None:
        on_progress(Step(f"warmed up in {warmed.seconds:.2f} s: {warmed.text}", detail=True))
    return running


def follow(
    engine: Engine,
    running: session.Running,
    on_line: Callable[[str], None],
    on_progress: Reporter = NULL,
) -> None:
    """Hand the server's log to `on_line` until Ctrl-C or SIGTERM (a KeyboardInterrupt) or
    until it stops; either way the container goes. A server that exits non-zero is an error
    (CONTAINER_EXITED); one stopped from elsewhere is not."""

    def say(message: str) -> None:
        on_progress(Step(message))

    say(f"Serving {running.alias} at {running.url}/v1 as {running.name} (Ctrl-C stops it)")
    try:
        with contextlib.suppress(containers.ContainerGone):
            for line in containers.follow_log(engine, running.id):
                on_line(line)
        code = containers.exit_code(engine, running.id)
        # Gone, or a clean exit: `vkrama stop` (or podman stop) from elsewhere, which
        # stops it before removing it; llama-server only exits 0 when asked to.
        if code in (None, 0):
            say(f"{running.name} was stopped")
            return
        raise VkramaError(
            f"{running.name} exited with code {code}",
            hint="its log is above; `vkrama serve ... --backend cpu` rules out the GPU",
            status=ExitStatus.CONTAINER_EXITED,
        )
    except KeyboardInterrupt:
        say(f"Stopping {running.name}")
    finally:
        engine.remove(running.id)


@contextlib.contextmanager
def reuse_or_start(
    settings: Settings, engine: Engine, request: ServeRequest, on_progress: Reporter = NULL
) -> Iterator[Endpoint]:
    """A server answering for `request.model`: one already serving it, else one started
    here on a free loopback port and removed when the block ends, however it ends."""
    from vkrama import store

    model = store.ensure(settings, request.model, on_progress=on_progress)
    key_file = request.api_key_file
    api_key = session.read_api_key(key_file) if key_file else None
    existing = containers.find_running(engine, model.sha256)
    if existing is not None:
        on_progress(Step(f"using {existing.name} at {existing.url}", detail=True))
        yield Endpoint(existing.url, existing.alias, api_key)
        return
    started = start(settings, engine, replace(request, port="auto", host="127.0.0.1"), on_progress)
    try:
        yield Endpoint(started.url, started.alias, api_key)
    finally:
        engine.remove(started.id)
