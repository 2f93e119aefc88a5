"""`vkrama pull` of a large file in parallel ranges, against a loopback server that counts the
bytes it sends: killed at random points and pulled again, refused ranges, lying servers.

The bound on what a killed pull costs: the next pull re-fetches at most one segment per
stream (the segment each stream was in), measured as everything the server sent over both
pulls minus the file's size.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from store_servers import LoopbackServer, Resource, killed_pull, sha256

from vkrama.errors import ExitStatus
from vkrama.store import download, ranges

MiB = 1 << 20
Run = Callable[..., Any]  # the conftest fixture: runs `vkrama ARGS` in a subprocess
STREAMS = 4


@pytest.fixture
def big(ranged_model: Path) -> bytes:
    data = ranged_model.read_bytes()
    assert len(data) >= ranges.PARALLEL_FROM, "the test file must be large enough for ranges"
    return data


@pytest.fixture
def env() -> dict[str, str]:
    return {"VKRAMA_MODELS_RETRIES": "1", "VKRAMA_MODELS_STREAMS": str(STREAMS)}


def partial_dir() -> Path:
    return Path(os.environ["VKRAMA_HOME"]) / "models" / "partial"


def ranged_gets(server: LoopbackServer, path: str) -> list[str]:
    return [h.get("Range", "") for method, p, h in server.requests if method == "GET" and p == path]


def stored_sha256(vkrama: Run, env: dict[str, str], ref: str) -> str:
    shown = vkrama("inspect", ref, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    return str(json.loads(shown.stdout)["sha256"])


# Three random points of the transfer (the seed is in the test id, so a failure reproduces).
KILL_POINTS = [random.Random(seed).uniform(0.1, 0.9) for seed in (1, 2, 3)]


@pytest.mark.parametrize(
    "fraction", KILL_POINTS, ids=[f"killed-at-{f:.0%}-of-the-bytes" for f in KILL_POINTS]
)
def test_a_killed_parallel_pull_resumes_and_refetches_at_most_one_segment_per_stream(
    vkrama: Run, env: dict[str, str], server: LoopbackServer, big: bytes, fraction: float
) -> None:
    # A per-connection cap, as hubs have: the streams together go STREAMS times as fast.
    url = server.add("/big/ranged.gguf", Resource(body=big, rate=3 * MiB))
    served_before = killed_pull(server, url, env, int(fraction * len(big)), within=60)
    assert served_before < len(big), "the kill came too late to test resuming"
    assert list(partial_dir().glob("*.ranges")), "the killed pull was not a ranged one"
    assert len({r for r in ranged_gets(server, "/big/ranged.gguf") if r}) > 1

    server.routes["/big/ranged.gguf"].rate = None
    result = vkrama("pull", url, env=env)
    assert result.returncode == 0, result.stderr
    assert stored_sha256(vkrama, env, url) == sha256(big)
    fetched_twice = server.bytes_served - len(big)
    bound = STREAMS * ranges.segment_size(len(big), STREAMS)
    assert fetched_twice <= bound, (fetched_twice, bound, served_before)
    assert list(partial_dir().iterdir()) == [], "the partial file and its record are gone"


def test_a_server_refusing_ranges_gets_one_stream(
    vkrama: Run, env: dict[str, str], server: LoopbackServer, big: bytes
) -> None:
    url = server.add("/norange/ranged.gguf", Resource(body=big, ignore_range=True))
    result = vkrama("pull", url, env=env)
    assert result.returncode == 0, result.stderr
    assert ranged_gets(server, "/norange/ranged.gguf") == [f"bytes=0-{download.PROBE - 1}"]
    assert server.bytes_served == len(big)
    assert stored_sha256(vkrama, env, url) == sha256(big)


def test_a_large_file_goes_in_ranges_and_a_small_one_in_one_stream(
    vkrama: Run, env: dict[str, str], server: LoopbackServer, big: bytes, tiny_model: Path
) -> None:
    large = server.add("/r/ranged.gguf", Resource(body=big))
    small = server.add("/r/tiny.gguf", Resource(body=tiny_model.read_bytes()))
    for url in (large, small):
        result = vkrama("pull", url, env=env)
        assert result.returncode == 0, result.stderr
    asked = ranged_gets(server, "/r/ranged.gguf")
    segment = ranges.segment_size(len(big), STREAMS)
    probe = f"bytes=0-{download.PROBE - 1}"
    assert asked[0] == probe  # the streams' requests come in any order
    assert {f"bytes={download.PROBE}-{segment - 1}", f"bytes={segment}-{2 * segment - 1}"} < set(
        asked
    )
    assert len(asked) == 1 + -(-len(big) // segment), "the probe, then one request a segment"
    assert ranged_gets(server, "/r/tiny.gguf") == [probe, f"bytes={download.PROBE}-"]
    assert server.bytes_served == len(big) + tiny_model.stat().st_size


@pytest.mark.parametrize(
    "lie",
    [
        pytest.param("200", id="a-200-for-a-later-range-goes-on-as-one-stream"),
        pytest.param("other-range", id="a-206-for-other-bytes-goes-on-as-one-stream"),
    ],
)
def test_a_server_that_stops_answering_ranges_still_gives_the_right_file(
    vkrama: Run, env: dict[str, str], server: LoopbackServer, big: bytes, lie: str
) -> None:
    url = server.add("/lie/ranged.gguf", Resource(body=big, range_lie=lie))
    result = vkrama("pull", url, env=env)
    assert result.returncode == 0, result.stderr
    assert stored_sha256(vkrama, env, url) == sha256(big)
    assert list(partial_dir().iterdir()) == []


def test_a_range_with_wrong_bytes_fails_the_checksum_and_keeps_nothing(
    vkrama: Run, env: dict[str, str], server: LoopbackServer, big: bytes
) -> None:
    url = server.add("/lie/ranged.gguf", Resource(body=big, range_lie="wrong-bytes"))
    result = vkrama("pull", url, "--sha256", sha256(big), env=env)
    assert result.returncode == ExitStatus.CHECKSUM, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "checksum mismatch" in errors[0], result.stderr
    assert list(partial_dir().iterdir()) == [], "damaged bytes are not kept to resume from"
    server.routes["/lie/ranged.gguf"].range_lie = ""
    again = vkrama("pull", url, "--sha256", sha256(big), env=env)
    assert again.returncode == 0, again.stderr


def test_a_damaged_record_of_ranges_starts_over(
    vkrama: Run, env: dict[str, str], server: LoopbackServer, big: bytes
) -> None:
    url = server.add("/r/ranged.gguf", Resource(body=big))
    from vkrama.store.blobs import key_for

    partial_dir().mkdir(parents=True)
    (partial_dir() / f"{key_for(url)}.part").write_bytes(b"\0" * len(big))
    (partial_dir() / f"{key_for(url)}.ranges").write_text('{"version": 1, "size": "a lot"}')
    result = vkrama("pull", url, env=env)
    assert result.returncode == 0, result.stderr
    assert stored_sha256(vkrama, env, url) == sha256(big)


def test_streams_flag_of_one_pulls_in_one_stream(
    vkrama: Run, server: LoopbackServer, big: bytes
) -> None:
    url = server.add("/one/ranged.gguf", Resource(body=big))
    result = vkrama("pull", "--streams", "1", url)
    assert result.returncode == 0, result.stderr
    assert ranged_gets(server, "/one/ranged.gguf") == [""]
