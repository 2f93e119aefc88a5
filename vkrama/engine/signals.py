"""The one path of Ctrl-C, SIGTERM and SIGHUP through vkrama.

Stage: engine (the first stage that must hold a signal back; later stages and the CLI use
this module, none installs a handler of its own). One handler serves every interrupt, and
what it does depends on where the main thread is:

- `interrupts()` (the CLI, around a command's work): SIGTERM (systemd, `kill`, a
  supervisor) and SIGHUP (the terminal closed) take Ctrl-C's clean path: KeyboardInterrupt.
  SIGINT is set too: a shell starts background jobs with SIGINT ignored, and a server must
  still stop cleanly when someone sends it one.
- `held()`: the signal is recorded, not acted on, and delivered when the block ends. Used
  while podman creates a container: an interrupt that landed mid-request abandoned it on our
  side while podman went on creating, the clean-up found nothing and the container stayed
  `created` (`vkrama tune`'s interrupt test, 2 of 3 runs at load 3-4; eac5049). Also while
  an event loop is made or closed, where an interrupt leaves a half-made object whose
  finalizer prints a traceback.
- `routed(callback)`: the signal calls `callback(signum)` instead of raising, for an asyncio
  loop that cancels its work (a KeyboardInterrupt raised inside asyncio's own finalizers is
  swallowed and the loop runs on).

Outside `interrupts()` (a library caller, a test) `held()` and `routed()` put the handler
in place for their block only and give back the caller's; a signal held there reaches the
caller's handler afterwards. Must not print.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
HELD = INTERRUPTS  # the name eac5049's callers know


class _Route:
    """What the one handler does now: hold (depth > 0), call the innermost callback, or
    raise KeyboardInterrupt."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending: list[int] = []
        self.callbacks: list[Callable[[int], None]] = []

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.depth:
            self.pending.append(signum)
        elif self.callbacks:
            self.callbacks[-1](signum)
        else:
            raise KeyboardInterrupt


_ROUTE = _Route()


def _in_main_thread() -> bool:
    # Only the main thread receives Python's signal handlers, and only it may set them.
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _installed() -> Iterator[bool]:
    """The one handler in place for the block; True when it was there already (an
    `interrupts()` around us), False when it was put there for this block only."""
    current = {sig: signal.getsignal(sig) for sig in INTERRUPTS}
    if all(handler == _ROUTE.handle for handler in current.values()):
        yield True
        return
    for sig in INTERRUPTS:
        signal.signal(sig, _ROUTE.handle)
    try:
        yield False
    finally:
        for sig, handler in current.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
    """Every interrupt (SIGINT, SIGTERM, SIGHUP) as KeyboardInterrupt while the block runs."""
    if not _in_main_thread():
        yield
        return
    with _installed():
        yield


@contextlib.contextmanager
def held(deliver: bool = True) -> Iterator[None]:
    """Run the block with interrupts recorded, not acted on; deliver them once it is done
    (to the same handler they would have reached before it), or drop them where `deliver`
    is False (a clean-up after an interrupt: a second Ctrl-C changes nothing)."""
    if not _in_main_thread():
        yield  # nothing to hold: signals arrive in the main thread only
        return
    with contextlib.ExitStack() as stack:
        ours = stack.enter_context(_installed())
        _ROUTE.depth += 1
        try:
            yield
        finally:
            _ROUTE.depth -= 1
            arrived = list(dict.fromkeys(_ROUTE.pending)) if _ROUTE.depth == 0 and deliver else []
            if _ROUTE.depth == 0:
                _ROUTE.pending.clear()
            if ours:  # the handler stays: deliver as it would have
                for signum in arrived:
                    _ROUTE.handle(signum, None)
            else:  # the caller's handlers come back first, then each signal reaches them
                stack.close()
                for signum in arrived:
                    signal.raise_signal(signum)


@contextlib.contextmanager
def routed(callback: Callable[[int], Any], wakeup_fd: int = -1) -> Iterator[None]:
    """While the block runs, an interrupt calls `callback(signum)` (from the main thread,
    between two bytecodes: it should only schedule work, e.g. `loop.call_soon_threadsafe`).
    `wakeup_fd`, a non-blocking socket an event loop reads, gets a byte per signal even when
    another thread caught it, so the loop wakes for the callback at once."""
    if not _in_main_thread():
        yield
        return
    with _installed():
        _ROUTE.callbacks.append(callback)
        previous = signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous)
            _ROUTE.callbacks.pop()
