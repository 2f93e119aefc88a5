"""chat.Conversation against a loopback server that streams like llama-server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from vkrama.bench.load import _one
from vkrama.errors import ExitStatus, VkramaError
from vkrama.serve.chat import Conversation


class StreamingServer(BaseHTTPRequestHandler):
    """Streams "Hel" "lo" as SSE deltas; 401 without the key when `key` is set."""

    key: str | None = None
    bodies: list[dict[str, Any]] = []  # noqa: RUF012 - shared on purpose, reset per test
    stream: bytes | None = None  # sent as is instead of the two deltas, when set

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        if self.key and self.headers.get("Authorization") != f"Bearer {self.key}":
            self.reply(401, b'{"error":{"code":401,"message":"Invalid API Key"}}')
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if self.stream is not None:
            self.wfile.write(self.stream)
            return
        for piece in ("Hel", "lo"):
            event = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    StreamingServer.bodies = []
    StreamingServer.key = None
    StreamingServer.stream = None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), StreamingServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_answer_streams_and_joins_the_history(url: str) -> None:
    conversation = Conversation(url, "tiny", max_tokens=8)
    assert list(conversation.ask("hi")) == ["Hel", "lo"]
    assert conversation.messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert StreamingServer.bodies[0] == {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 8,
    }


def test_second_turn_sends_the_whole_conversation(url: str) -> None:
    conversation = Conversation(url, "tiny")
    list(conversation.ask("hi"))
    list(conversation.ask("again"))
    sent = StreamingServer.bodies[1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]


def test_missing_key_is_an_auth_error_and_the_turn_is_dropped(url: str) -> None:
    StreamingServer.key = "sk-right"
    conversation = Conversation(url, "tiny", api_key="sk-wrong")
    with pytest.raises(VkramaError) as caught:
        list(conversation.ask("hi"))
    assert caught.value.status == ExitStatus.AUTH
    assert "sk-wrong" not in caught.value.message
    assert conversation.messages == []


def test_key_is_sent_as_bearer_token(url: str) -> None:
    StreamingServer.key = "sk-right"
    assert "".join(Conversation(url, "tiny", api_key="sk-right").ask("hi")) == "Hello"


def test_unreachable_server_is_a_network_error() -> None:
    with pytest.raises(VkramaError) as caught:
        list(Conversation("http://127.0.0.1:9", "tiny").ask("hi"))
    assert caught.value.status == ExitStatus.NETWORK


# One delta's JSON over three `data:` lines (joined with newlines it is the same JSON), after
# a keep-alive comment and with `event:`, `id:` and `retry:` fields, in CRLF line endings;
# then a delta in one line ending in a lone CR, and [DONE].
MULTI_LINE = (
    b": keep-alive\r\n\r\n"
    b"event: message\r\nid: 7\r\nretry: 1000\r\n"
    b'data: {"choices": [{"index": 0,\r\n'
    b'data:  "delta": {"content": "Hel"}}\r\n'
    b"data: ]}\r\n\r\n"
    b'data:{"choices":[{"index":0,"delta":{"content":"lo"}}]}\r\r'
    b"data: [DONE]\n\n"
)


def test_an_event_of_several_data_lines_is_one_event(url: str) -> None:
    StreamingServer.stream = MULTI_LINE
    assert list(Conversation(url, "tiny").ask("hi")) == ["Hel", "lo"]


def test_the_serving_bench_reads_an_event_of_several_data_lines_as_one_chunk(url: str) -> None:
    StreamingServer.stream = MULTI_LINE

    async def once() -> Any:
        async with httpx.AsyncClient(base_url=url) as client:
            return await _one(client, b'{"stream": true}', {}, None)

    trace = asyncio.run(once())
    assert trace.error is None
    assert len(trace.chunks) == 2


@pytest.mark.parametrize(
    "stream",
    [
        # llama.cpp's server_sent_event(sink, "error", ...): a field of its own
        pytest.param(b'error: {"code": 500, "message": "slot unavailable"}\n\n', id="error-field"),
        pytest.param(b'data: {"error": {"code": 500, "message": "slot unavailable"}}\n\n',
                     id="data-with-an-error-object"),
        pytest.param(b'event: error\ndata: {"message": "slot unavailable"}\n\n',
                     id="an-error-event"),
    ],
)  # fmt: skip
def test_an_error_the_server_streams_mid_answer_is_an_error(url: str, stream: bytes) -> None:
    StreamingServer.stream = b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n' + stream
    with pytest.raises(VkramaError, match="the server failed mid-answer: slot unavailable"):
        list(Conversation(url, "tiny").ask("hi"))
