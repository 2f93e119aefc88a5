"""Signals held back while podman creates a container.

Stage: engine. A Ctrl-C (or the SIGTERM/SIGHUP the CLI turns into one) that lands while the
create request is in flight abandons it on our side while podman goes on and creates the
container: the clean-up that runs next finds nothing, and the container stays behind in
state `created` (seen in `vkrama tune`'s interrupt test, 2 of 3 runs at load 3-4). Held
back until the create call returns, the signal then arrives with the container known.
Must not print.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Run the block with HELD signals recorded, not acted on; re-send them afterwards, so
    each reaches whatever handler was in place before (KeyboardInterrupt, the default)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals; nothing to hold
        return
    arrived: list[int] = []

    def record(signum: int, _frame: FrameType | None) -> None:
        arrived.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in HELD}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)
