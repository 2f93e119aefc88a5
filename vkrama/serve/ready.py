"""Wait until a started llama-server answers.

Stage: serve, after engine.run. Only speaks HTTP to the server and asks the caller whether
the container still runs; never prints (it reports `Waiting` to a `Reporter`, the CLI spins a
spinner) and never imports podman-py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import requests

from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import NULL, Reporter, Waiting

# Poll fast: readiness latency is the whole overhead of `serve -d` over a raw podman run.
POLL_INTERVAL_S = 0.02
# Asking podman whether the container still runs costs a round trip; do it less often,
# and not at all in the first half second, when a small model usually becomes ready.
LIVENESS_INTERVAL_S = 0.25
LIVENESS_FIRST_S = 0.5


def wait_ready(
    url: str,
    alias: str,
    timeout: float,
    is_running: Callable[[], bool],
    on_progress: Reporter = NULL,
    api_key: str | None = None,
    what: str = "waiting for the server",
) -> float:
    """Block until `/health` is 200 and `/v1/models` lists `alias`; return seconds waited.

    Raises VkramaError(CONTAINER_EXITED) as soon as `is_running()` says the container is
    gone, VkramaError(TIMEOUT) after `timeout` seconds. Every poll reports
    `Waiting(what, elapsed)` (the CLI spins a spinner with it).
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    start = time.monotonic()
    next_liveness = start + LIVENESS_FIRST_S
    with requests.Session() as session, _reporting_done(on_progress, what, start):
        while True:
            now = time.monotonic()
            elapsed = now - start
            if _is_ready(session, url, alias, headers):
                return time.monotonic() - start
            if now >= next_liveness:
                next_liveness = now + LIVENESS_INTERVAL_S
                if not is_running():
                    raise VkramaError(
                        "llama-server exited before it was ready",
                        hint="its last log lines are above; `--backend cpu` rules out the GPU",
                        status=ExitStatus.CONTAINER_EXITED,
                    )
            if elapsed >= timeout:
                raise VkramaError(
                    f"llama-server was not ready after {timeout:g} s",
                    hint="a large model may need a longer --timeout",
                    status=ExitStatus.TIMEOUT,
                )
            on_progress(Waiting(what, elapsed))
            time.sleep(POLL_INTERVAL_S)


@contextmanager
def _reporting_done(on_progress: Reporter, what: str, start: float) -> Iterator[None]:
    """However the wait ends, its last report says so (the CLI erases its spinner)."""
    try:
        yield
    finally:
        on_progress(Waiting(what, time.monotonic() - start, done=True))


def _is_ready(session: requests.Session, url: str, alias: str, headers: dict[str, str]) -> bool:
    try:
        health = session.get(f"{url}/health", headers=headers, timeout=1)
        if health.status_code != 200:
            return False
        models = session.get(f"{url}/v1/models", headers=headers, timeout=1)
        if models.status_code != 200:
            return False
        listed = {entry.get("id") for entry in models.json().get("data", [])}
    except (requests.RequestException, ValueError, AttributeError):
        # Refused, reset or half-written answers while the server starts.
        return False
    return alias in listed
