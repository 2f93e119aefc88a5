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
    """One `data:` line of a streamed chat completion."""

    payload: Mapping[str, Any] = field(default_factory=dict)
    done: bool = False  # `data: [DONE]`: the stream is over
    server_error: str | None = None  # the server reported an error mid-stream
    garbled: str | None = None  # not a JSON object (the start of what came instead)

    @property
    def text(self) -> str:
        """The output text this event carries ("" for usage and timing events)."""
        choices = self.payload.get("choices") or [{}]
        return str((choices[0].get("delta") or {}).get("content") or "")


def event(line: str | bytes) -> Event | None:
    """The event in one server-sent-events line; None for lines that carry none (blank
    separators, comments, `event:` lines)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
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
