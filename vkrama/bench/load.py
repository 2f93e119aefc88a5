"""The serving benchmark's load generator: many streaming chat completions at once.

Stage: bench (serving), against a ready llama-server. Speaks HTTP only (httpx, async: one
event loop holds every open stream, so the generator costs little CPU next to the server
and no thread per client); records timestamps into `RequestTrace`s and leaves the
arithmetic to `latency`. Must not print, start containers or log the API key.

A level is a closed loop (N clients, each sending its next request when its last one ended)
or an open loop (requests sent on `arrivals`' schedule, whatever the server does). Every
request asks for the same work on every stack: the same prompt (`prompts`: the length
nearest N that the server's own tokenizer allows, chat template included), exactly M output
tokens (`ignore_eos`), and no reuse of an earlier request's prompt cache (`cache_prompt:
false`) unless a level measures that cache (`--prefix-tokens`). The event loop that drives
the requests also receives Ctrl-C, SIGTERM and SIGHUP while it runs (`EventLoop`, through the
one signal path of engine/signals.py), tested together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import httpx

from vkrama.bench import arrivals, prompts
from vkrama.bench.arrivals import Pace
from vkrama.bench.latency import RequestTrace
from vkrama.engine import signals
from vkrama.serve import api

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Target:
    """Where and what to ask: a ready server, the model alias it serves, the key if any."""

    url: str
    alias: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 600.0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def request_body(
    target: Target, prompt: str, gen_tokens: int, *, system: str = "", cache: bool = False
) -> dict[str, Any]:
    """One chat request; with `cache`, the server may reuse the KV of a prompt prefix it
    computed before (`cache_prompt`: what `--prefix-tokens` measures), else every request
    pays for its whole prompt."""
    return {
        "model": target.alias,
        "messages": prompts.messages(prompt, system),
        "stream": True,
        "max_tokens": gen_tokens,
        "ignore_eos": True,  # exactly gen_tokens tokens, whatever the model would say
        "cache_prompt": cache,
        "stream_options": {"include_usage": True},
    }


_T = TypeVar("_T")


class EventLoop:
    """One event loop for a cell's levels, made and closed whole whatever interrupts."""

    def __enter__(self) -> EventLoop:
        # An interrupt that lands while the loop is half made leaves an object whose
        # finalizer prints a traceback: held until it is whole (engine/signals.py).
        with signals.held():
            self.loop = asyncio.new_event_loop()
            # A signal that another thread happens to catch still wakes the loop at once:
            # Python's C handler writes to this socket (signal.set_wakeup_fd), which the
            # loop reads, as asyncio's own add_signal_handler does.
            self.wake, wake_end = socket.socketpair()
            self.wake_end = wake_end
            for end in (self.wake, wake_end):
                end.setblocking(False)
            self.loop.add_reader(self.wake.fileno(), self._drain)
        return self

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            self.wake.recv(4096)

    def run(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Run `work` to its end. Ctrl-C, SIGTERM and SIGHUP reach the loop as events while
        it runs: they cancel `work`, which closes its streams, and then raise
        KeyboardInterrupt here. Raised by a signal handler instead, the interrupt
        could land in a finalizer of asyncio's, which swallows it and runs on."""
        task = self.loop.create_task(work)
        caught: list[int] = []

        def interrupt(signum: int) -> None:
            caught.append(signum)
            task.cancel()

        # The one signal path routes an interrupt here while the loop runs: it only
        # schedules the cancel, which the loop's self-pipe wakes it up for at once.
        route = signals.routed(
            lambda signum: self.loop.call_soon_threadsafe(interrupt, signum),
            wakeup_fd=self.wake_end.fileno(),
        )
        try:
            with route:
                result = self.loop.run_until_complete(task)
        except asyncio.CancelledError:
            if caught:
                raise KeyboardInterrupt from None
            raise
        if caught:
            raise KeyboardInterrupt
        return result

    def __exit__(self, *exc: object) -> None:
        with signals.held():
            # An interrupt leaves the level's tasks pending: cancel them and let them run
            # their cleanup (httpx closes its streams) before the loop goes.
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.remove_reader(self.wake.fileno())
            self.loop.close()
            self.wake.close()
            self.wake_end.close()


@dataclass(frozen=True)
class Level:
    """One level of load: a closed loop of `concurrency` clients (each sends its next
    request when its last one ended), or an open loop sending at `pace` whatever the server
    does. It ends after `requests` requests or, with `duration`, once no new one is due."""

    concurrency: int = 0
    pace: Pace | None = None
    requests: int | None = None
    duration: float | None = None

    def label(self) -> str:
        if self.pace is not None:
            return self.pace.label()
        return f"concurrency {self.concurrency}"


@dataclass(frozen=True)
class Sent:
    """What one level sent and saw: traces, wall time, the generator's CPU seconds, and
    (open loop) how late each request left against its schedule, and the rate they left at."""

    traces: list[RequestTrace]
    wall_s: float
    client_cpu_s: float
    lags: list[float] = field(default_factory=list)
    realized_rate: float | None = None


def run_level(
    loop: EventLoop, target: Target, bodies: Callable[[], dict[str, Any]], level: Level
) -> Sent:
    """Drive one level; each request carries the next of `bodies()`."""
    cpu = time.process_time()
    sent = loop.run(_drive(target, bodies, level))
    return replace(sent, client_cpu_s=time.process_time() - cpu)


async def _drive(target: Target, bodies: Callable[[], dict[str, Any]], level: Level) -> Sent:
    # An open loop holds as many connections as requests are in flight; a closed one, one
    # per client.
    size = level.concurrency or None
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    headers = {**target.headers, "content-type": "application/json"}
    traces: list[RequestTrace] = []
    count = [0]
    clock = time.perf_counter

    async with httpx.AsyncClient(
        base_url=target.url, timeout=target.timeout, limits=limits
    ) as client:

        async def send(due: float | None = None) -> None:
            payload = json.dumps(bodies()).encode()
            count[0] += 1  # one event loop: no lock needed between the awaits
            traces.append(await _one(client, payload, headers, due))

        started = clock()
        lags: list[float] = []
        realized = None
        if level.pace is not None:
            times = arrivals.schedule(level.pace, level.requests, level.duration)
            lags = await arrivals.dispatch(times, send, clock, asyncio.sleep)
            realized = arrivals.realized_rate([t + g for t, g in zip(times, lags, strict=True)])
        else:
            deadline = None if level.duration is None else started + level.duration

            def due() -> bool:
                more = level.requests is None or count[0] < level.requests
                return more and (deadline is None or clock() < deadline)

            async def client_loop() -> None:
                while due():
                    await send()

            clients = min(level.concurrency, level.requests or level.concurrency)
            await asyncio.gather(*(client_loop() for _ in range(clients)))
        wall = clock() - started
    return Sent(traces, wall, 0.0, lags, realized)


async def _one(
    client: httpx.AsyncClient, payload: bytes, headers: dict[str, str], due: float | None
) -> RequestTrace:
    """One request timed from `due` (an open loop's schedule: lateness is queueing), or now."""
    clock = time.perf_counter
    sent = clock() if due is None else min(due, clock())
    recorder = StreamRecorder()
    try:
        async with client.stream("POST", CHAT_PATH, content=payload, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                detail = api.body_detail(response.text)[:120]
                return RequestTrace(error=f"HTTP {response.status_code}: {detail}")
            async for line in response.aiter_lines():
                if not recorder.feed(line, clock() - sent):
                    break
    except httpx.HTTPError as error:
        recorder.error = f"{type(error).__name__}: {error}"[:160]
    return recorder.trace(clock() - sent)


class StreamRecorder:
    """Reads one streaming chat completion's server-sent events as they arrive: when each
    chunk with output text came, the usage and llama-server's `timings` at the end."""

    def __init__(self) -> None:
        self.chunks: list[float] = []
        self.usage: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}
        self.error: str | None = None
        self.done = False
        self.events = api.Events()
        self.began: float | None = None  # when the first line of the event being read came

    def feed(self, line: str, now: float) -> bool:
        """Take one line that arrived `now` seconds after sending; False once it is over."""
        # A chunk counts from its event's first line, as it did when each line was an event:
        # the blank line that ends the event comes in the same write.
        at = now if self.began is None else self.began
        self.began = None if not line else at
        found = self.events.feed(line)
        if found is None:
            return True
        if found.done:
            self.done = True
            return False
        if found.garbled is not None or found.server_error is not None:
            self.error = (
                f"server error: {found.server_error[:120]}"
                if found.server_error is not None
                else f"not JSON in the stream: {found.garbled}"
            )
            return False
        if found.text:
            self.chunks.append(at)
        self.usage = found.payload.get("usage") or self.usage
        self.timings = found.payload.get("timings") or self.timings
        return True

    def trace(self, end: float) -> RequestTrace:
        """The request as recorded, ended `end` seconds after sending."""
        error = self.error
        if error is None and not self.done:
            error = "the stream ended without [DONE]"
        if error is None and not self.chunks:
            error = "no output text in the stream"
        if error is not None:
            return RequestTrace(chunks=tuple(self.chunks), error=error)
        return RequestTrace(
            chunks=tuple(self.chunks),
            end=end,
            output_tokens=int(self.usage.get("completion_tokens") or len(self.chunks)),
            prompt_tokens=int(self.usage.get("prompt_tokens") or 0),
            server={k: float(v) for k, v in self.timings.items() if isinstance(v, (int, float))},
        )
