"""The engine's error edges, at the podman-py seam: what a lost podman, a slow one and a
container already gone become. A fake transport stands in for the socket (unit tests at
the engine seam); the real podman is tested in test_engine.py."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from podman import errors as podman_errors

from vkrama.engine.client import Podman
from vkrama.engine.socket import Endpoint
from vkrama.errors import ExitStatus, VkramaError


@dataclass
class Response:
    status_code: int
    body: Any = None

    def json(self) -> Any:
        return self.body

    @property
    def text(self) -> str:
        return str(self.body or "")

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise podman_errors.APIError("refused", explanation=f"status {self.status_code}")


def wrapped(error: requests.RequestException) -> podman_errors.APIError:
    """What podman-py raises when the transport fails: an APIError from the request's error."""
    try:
        raise podman_errors.APIError("/containers", explanation="operation failed") from error
    except podman_errors.APIError as api_error:
        return api_error


@dataclass
class Api:
    """podman-py's APIClient: each verb answers or raises what it was given."""

    answers: dict[str, Response | Exception | list[Response]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def _answer(self, verb: str) -> Response:
        self.asked.append(verb)
        found = self.answers[verb]
        if isinstance(found, list):  # one answer per call, in order
            found = found.pop(0)
        if isinstance(found, Exception):
            raise found
        return found

    def delete(self, _path: str, **_kw: Any) -> Response:
        return self._answer("delete")

    def post(self, _path: str, **_kw: Any) -> Response:
        return self._answer("post")

    def get(self, _path: str, **_kw: Any) -> Response:
        return self._answer("get")


@dataclass
class Client:
    api: Api


def engine(**answers: Response | Exception | list[Response]) -> Podman:
    made = Podman.__new__(Podman)  # no socket: the client is the fake
    made.client = Client(Api(answers))  # type: ignore[assignment]
    made.reconnect_s = 0  # no service to wait for: a lost one fails at once
    made.endpoint = Endpoint("unix:///nonexistent.sock", "test")
    return made


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(Response(204), id="removed"),
        pytest.param(Response(404), id="already-gone"),
        pytest.param(Response(409), id="being-removed-by-someone-else"),
    ],
)
def test_remove_is_fine_when_the_container_ends_either_way(answer: Response) -> None:
    engine(delete=answer).remove("c0ffee")


def test_a_container_that_stopped_while_it_was_being_removed_is_removed_once_stopped() -> None:
    # Podman 4.3's answer when the process exits on SIGTERM as the remove sends SIGKILL.
    improper = Response(500, '{"cause":"container state improper","message":"cannot remove '
                        "container c0ffee as it could not be stopped: sending SIGKILL to "
                        'container c0ffee: container state improper: stopped"}')  # fmt: skip
    api = Api({"delete": [improper, Response(204)], "post": Response(200)})
    made = engine()
    made.client = Client(api)  # type: ignore[assignment]
    made.remove("c0ffee")
    assert api.asked == ["delete", "post", "delete"]  # wait until stopped, then remove again


@pytest.mark.parametrize(
    "lost",
    [
        pytest.param(wrapped(requests.ConnectionError("refused")), id="as-podman-py-wraps-it"),
        pytest.param(requests.ConnectionError("reset"), id="bare"),
    ],
)
def test_remove_raises_when_podman_is_lost(lost: Exception) -> None:
    with pytest.raises(VkramaError) as caught:
        engine(delete=lost).remove("c0ffee")
    assert caught.value.status == ExitStatus.ENGINE_UNAVAILABLE
    assert caught.value.hint and "podman info" in caught.value.hint


def test_a_wait_that_outlasts_its_timeout_is_timeout() -> None:
    slow = engine(
        get=Response(200, {"State": {"Status": "running", "ExitCode": 0}}),
        post=wrapped(requests.ReadTimeout("read timed out")),
    )
    with pytest.raises(VkramaError) as caught:
        slow.wait("c0ffee", timeout=1)
    assert caught.value.status == ExitStatus.TIMEOUT
    assert caught.value.message == "container c0ffee still running after 1 s"


def test_a_connect_timeout_means_podman_is_gone_not_slow() -> None:
    gone = engine(get=wrapped(requests.ConnectTimeout("connect timed out")))
    with pytest.raises(VkramaError) as caught:
        gone.state("c0ffee")
    assert caught.value.status == ExitStatus.ENGINE_UNAVAILABLE


class Once(Api):
    """An API whose first call of each verb fails as a dead service's does, then answers."""

    def _answer(self, verb: str) -> Response:
        self.calls = [*getattr(self, "calls", []), verb]
        if self.calls.count(verb) == 1:
            raise wrapped(requests.ConnectionError("connection refused"))
        return super()._answer(verb)


@pytest.fixture
def pinged(tmp_path: Path) -> Iterator[str]:
    """A unix socket that answers podman's /_ping as a service that came back does."""
    path = Path("/tmp") / f"vk-ping-{tmp_path.name}.sock"  # short: socket paths are limited
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()

    def answer() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed: the test is over
            with conn:
                conn.recv(256)
                conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nOK")

    threading.Thread(target=answer, daemon=True).start()
    yield f"unix://{path}"
    server.close()
    path.unlink(missing_ok=True)


def test_a_call_to_a_service_that_comes_back_is_repeated_once_it_answers(pinged: str) -> None:
    back = engine(get=Response(200, {"State": {"Status": "running", "Pid": 7}}))
    back.client = Client(Once(back.client.api.answers))  # type: ignore[assignment,attr-defined]
    back.reconnect_s, back.endpoint = 60, Endpoint(pinged, "test")
    assert back.state("c0ffee").pid == 7
    assert back.client.api.calls == ["get", "get"]  # type: ignore[attr-defined]


def test_a_service_that_stays_away_past_the_window_is_said_with_the_setting() -> None:
    gone = engine(get=wrapped(requests.ConnectionError("connection refused")))
    gone.reconnect_s = 0.2  # the socket of engine() answers nothing
    with pytest.raises(VkramaError) as caught:
        gone.state("c0ffee")
    assert caught.value.status == ExitStatus.ENGINE_UNAVAILABLE
    assert caught.value.message == (
        "inspect container c0ffee: podman did not answer again within 0.2 s "
        "(settings engine.reconnect)"
    )
