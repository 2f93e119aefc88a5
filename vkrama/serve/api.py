"""What a client of llama-server's HTTP API reads: streamed chat events and failed requests.

Stage: serve (the client side), shared by `chat` (`vkrama run`) and the serving bench
(`bench.load`, `bench.prompts`), so that both read a stream and word a failure the same
way. Pure: lines, status codes and bodies in, events and `VkramaError`s out; no HTTP
library, no clock, no printing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vkrama.errors import ExitStatus, VkramaError


@dataclass(frozen=True)
class Event:
    """One server-sent event of a streamed chat completion."""

    payload: Mapping[str, Any] = field(default_factory=dict)
    done: bool = False  # `data: [DONE]`: the stream is over
    server_error: str | None = None  # the server reported an error mid-stream
    garbled: str | None = None  # not a JSON object (the start of what came instead)

    @property
    def text(self) -> str:
        """The output text this event carries ("" for usage and timing events)."""
        choices = self.payload.get("choices") or [{}]
        return str((choices[0].get("delta") or {}).get("content") or "")


class Events:
    """The events of one server-sent-events stream, fed its lines (without their line
    endings) in order, read by the WHATWG EventSource rules: `data:` lines joined with
    newlines into one event, dispatched at the blank line that ends it; `:` comments
    (keep-alives) and `retry:` skipped; `event:` and `id:` kept; one space after the colon
    dropped; an event the stream ends before its blank line is dropped. Plus llama.cpp's own
    `error: {...}` field (its server_sent_event(sink, "error", ...)), which no standard reader
    surfaces.

    Hand-written rather than httpx-sse: that reads only httpx responses, while `chat` reads
    the stream through requests, and it would drop llama.cpp's `error:` field as unknown.
    """

    def __init__(self) -> None:
        self.data: list[str] = []
        self.kind = ""  # the event's `event:` field ("" is the standard "message")
        self.error: str | None = None  # llama.cpp's `error:` field
        self.last_id = ""  # `id:`, kept across events as EventSource keeps it
        self.started = False

    def feed(self, line: str | bytes) -> Event | None:
        """The event this line completes, or None (a line inside an event, a comment, or a
        blank line after no data)."""
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        if not self.started:
            self.started = True
            line = line.removeprefix("\ufeff")  # a byte order mark may open the stream
        if not line:
            return self._dispatch()
        name, _, value = line.partition(":")  # a line without a colon is a field, value ""
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.kind = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "error":
            self.error = value
        return None  # "" (a comment), "retry" (no reconnection here) and unknown fields

    def _dispatch(self) -> Event | None:
        data, kind, error = "\n".join(self.data), self.kind, self.error
        had_data = bool(self.data)
        self.data, self.kind, self.error = [], "", None
        if error is not None:
            return _failed(error)
        if not had_data:
            return None
        if kind == "error":
            return _failed(data)
        return _read(data)


def _read(data: str) -> Event:
    """The event one message's data makes: [DONE], a JSON object, or what it is not."""
    if data.strip() == "[DONE]":
        return Event(done=True)
    try:
        payload = json.loads(data)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return Event(garbled=data[:80])
    if "error" in payload:
        return Event(server_error=message(payload["error"]))
    return Event(payload)


def _failed(text: str) -> Event:
    """A server error event: its JSON's message where it is JSON, else its text."""
    try:
        payload = json.loads(text)
    except ValueError:
        payload = text
    if isinstance(payload, dict) and "error" in payload:
        payload = payload["error"]
    return Event(server_error=message(payload))


def message(error: object) -> str:
    """The readable part of an error the server sent (its `message`, else the whole)."""
    if isinstance(error, dict):
        return str(error.get("message", error))
    return " ".join(str(error).split())[:200]


def body_detail(body: str) -> str:
    """What a failed request's body says: the JSON error's message, else its first bytes."""
    try:
        found = json.loads(body)
    except ValueError:
        return body.strip()[:200]
    return message(found.get("error", found) if isinstance(found, dict) else found)


def unreachable(what: str, error: BaseException, hint: str | None = None) -> VkramaError:
    """`what` (e.g. "chat request to URL") got no answer at all."""
    return VkramaError(
        f"{what} failed ({type(error).__name__})",
        hint=hint or "is the server still running?",
        status=ExitStatus.NETWORK,
    )


def refused(what: str, status: int, body: str, hint: str | None = None) -> VkramaError:
    """`what` was answered with HTTP `status` other than 200."""
    if status == 401:
        return VkramaError(
            "the server wants an API key",
            hint="pass the same --api-key-file the server was started with",
            status=ExitStatus.AUTH,
        )
    return VkramaError(
        f"{what} failed: HTTP {status}: {body_detail(body)}", hint=hint, status=ExitStatus.ERROR
    )
