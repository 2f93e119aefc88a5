"""A minimal OpenAI chat-completions client for `vkrama run`, streaming over requests.

Stage: after serving (a client of a ready llama-server). Speaks HTTP to one base URL and
yields text (reading the stream and wording failures is `api`'s); must not print, start
containers or log the API key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import requests

from vkrama.errors import ExitStatus, VkramaError
from vkrama.serve import api


@dataclass
class Conversation:
    """The messages so far; `ask` appends the user's turn and the model's answer."""

    url: str  # base URL, e.g. http://127.0.0.1:8080
    model: str
    api_key: str | None = field(default=None, repr=False)
    max_tokens: int | None = None
    temperature: float | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    timeout: float = 600

    def ask(self, prompt: str) -> Iterator[str]:
        """Stream the answer to `prompt` piece by piece; it joins the history once complete."""
        self.messages.append({"role": "user", "content": prompt})
        pieces: list[str] = []
        try:
            for piece in stream_chat(
                self.url,
                self.model,
                self.messages,
                api_key=self.api_key,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                timeout=self.timeout,
            ):
                pieces.append(piece)
                yield piece
        except BaseException:
            self.messages.pop()  # an interrupted turn is not part of the conversation
            raise
        self.messages.append({"role": "assistant", "content": "".join(pieces)})


def stream_chat(
    url: str,
    model: str,
    messages: list[dict[str, str]],
    *,
    api_key: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    timeout: float = 600,
) -> Iterator[str]:
    """POST /v1/chat/completions with `stream: true` and yield each content delta."""
    body: dict[str, object] = {"model": model, "messages": messages, "stream": True}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with requests.post(
            f"{url}/v1/chat/completions", json=body, headers=headers, stream=True, timeout=timeout
        ) as response:
            if response.status_code != 200:
                raise api.refused("chat request", response.status_code, response.text)
            events = api.Events()
            for line in response.iter_lines(decode_unicode=False):
                found = events.feed(line)
                if found is None or found.garbled is not None:
                    continue
                if found.done:
                    break
                if found.server_error is not None:
                    raise VkramaError(
                        f"the server failed mid-answer: {found.server_error}",
                        status=ExitStatus.ERROR,
                    )
                if found.text:
                    yield found.text
    except requests.RequestException as exc:
        raise api.unreachable(
            f"chat request to {url}", exc, hint="is the server still running? `vkrama ps` shows it"
        ) from None
