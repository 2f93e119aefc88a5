"""A stub OpenAI-compatible streaming server of known capacity, on loopback, for the tests.

Not part of vkrama: the reference the serving bench's sweep, goodput and arrival tests are
checked against, so that their expectations come from the stub's fixed timing and never
from the code under test or the speed of the host.

Real parts only: a threading HTTP/1.1 server (one thread per connection, keep-alive,
chunked server-sent events), `slots` requests served at once (a semaphore; the others wait
for one, as llama-server's queue does), each taking `prefill_s` before its first token and
`token_s` per token after it. Every token is sent at its deadline from the slot's start
(never a sleep per token), so a loaded host delays tokens but does not stretch the
service time. One request holds its slot for `service_s(M) = prefill_s + (M-1) x token_s`,
so the server completes at most `capacity(M) = slots / service_s(M)` requests per second.

It answers what `vkrama bench --serve --url` asks: /health, /v1/models, /props (unless
`props=False`), /apply-template and /tokenize (unless `tokenize=False`: then prompt
lengths can only be the server's own `usage.prompt_tokens`), /v1/chat/completions with
`stream`, `max_tokens`, `ignore_eos`, `stream_options.include_usage` and llama-server's
`timings`. A token is a whitespace-separated word; the template adds one per message and
one for BOS.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ALIAS = "stub-model"


@dataclass
class Stub:
    """The server's fixed timing, and what it saw: when each chat request arrived (its own
    clock, `time.monotonic`) and the most it served at once."""

    slots: int = 2
    prefill_s: float = 0.05
    token_s: float = 0.01
    tokenize: bool = True
    props: bool = True
    url: str = ""
    arrivals: list[float] = field(default_factory=list)
    cached: list[bool] = field(default_factory=list)  # each chat request's cache_prompt
    most_at_once: int = 0
    _busy: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def service_s(self, gen_tokens: int) -> float:
        return self.prefill_s + (gen_tokens - 1) * self.token_s

    def capacity(self, gen_tokens: int) -> float:
        """Requests per second it completes at most, generating `gen_tokens` each."""
        return self.slots / self.service_s(gen_tokens)


def _template(messages: list[dict[str, str]]) -> str:
    return "".join(f"<{m.get('role', 'user')}> {m.get('content', '')}\n" for m in messages)


def _count(text: str) -> int:
    return 1 + len(text.split())  # BOS, then one per word


def send_json(handler: BaseHTTPRequestHandler, status: int, body: object) -> None:
    """One JSON answer with its length (keep-alive): for every loopback test server."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the load generator's connection pool uses
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Each event is its own small write: without this, Nagle's algorithm and the
        # client's delayed ACK hold tokens back for up to 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: object) -> None:
        send_json(self, status, body)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        found: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
        return found

    def do_GET(self) -> None:
        stub = self.server.stub
        if self.path == "/health":
            self._json(200, {"status": "ok"})
        elif self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": ALIAS, "object": "model",
                                                          "owned_by": "stub"}]})  # fmt: skip
        elif self.path == "/props" and stub.props:
            self._json(200, {"build_info": "stub-1", "total_slots": stub.slots,
                             "model_path": f"/models/{ALIAS}.gguf"})  # fmt: skip
        else:
            self._json(404, {"error": {"code": 404, "message": "File Not Found"}})

    def do_POST(self) -> None:
        stub = self.server.stub
        body = self._body()
        if self.path == "/apply-template" and stub.tokenize:
            self._json(200, {"prompt": _template(body.get("messages", []))})
        elif self.path == "/tokenize" and stub.tokenize:
            self._json(200, {"tokens": list(range(_count(body.get("content", ""))))})
        elif self.path == "/v1/chat/completions":
            self._chat(stub, body)
        else:
            self._json(404, {"error": {"code": 404, "message": "File Not Found"}})

    def _chat(self, stub: Stub, body: dict[str, Any]) -> None:
        with stub._lock:
            stub.arrivals.append(time.monotonic())
            stub.cached.append(bool(body.get("cache_prompt")))
        tokens = int(body.get("max_tokens") or 16)
        prompt = _count(_template(body.get("messages", [])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with self.server.slots:  # waits for a free slot: the queue the sweep must find
            with stub._lock:
                stub._busy += 1
                stub.most_at_once = max(stub.most_at_once, stub._busy)
            try:
                start = time.monotonic()
                for n in range(tokens):
                    due = start + stub.prefill_s + n * stub.token_s
                    time.sleep(max(0.0, due - time.monotonic()))
                    self._event({"choices": [{"index": 0, "delta": {"content": f" w{n}"}}]})
            finally:
                with stub._lock:
                    stub._busy -= 1
        decode_s = max((tokens - 1) * stub.token_s, 1e-9)
        timings = {"cache_n": 0, "prompt_n": prompt, "prompt_ms": stub.prefill_s * 1000,
                   "prompt_per_second": prompt / stub.prefill_s, "predicted_n": tokens,
                   "predicted_per_second": (tokens - 1) / decode_s}  # fmt: skip
        usage = {"prompt_tokens": prompt, "completion_tokens": tokens,
                 "total_tokens": prompt + tokens}  # fmt: skip
        self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                     "usage": usage, "timings": timings})  # fmt: skip
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _event(self, payload: dict[str, Any]) -> None:
        self._chunk(f"data: {json.dumps(payload)}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # an open loop opens many connections at once

    def __init__(self, stub: Stub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stub = stub
        self.slots = threading.BoundedSemaphore(stub.slots)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that closes its kept-alive connection resets it: not an error here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serving(stub: Stub) -> Iterator[Stub]:
    """`stub` listening on a free loopback port (its `url` set) until the block ends."""
    server = _Server(stub)
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
