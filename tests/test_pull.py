"""`vkrama pull | list | inspect | rm` as a subprocess against loopback servers the tests start.

Servers: plain HTTP with Range, a fake Hugging Face endpoint (resolve URLs with redirects,
X-Linked-Etag/X-Linked-Size/X-Repo-Commit, the tree API), a fake Ollama registry with the
bearer-token flow. The real OCI registry lives in test_pull_oci.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import examplemodel
import pytest
from store_servers import (
    LoopbackServer,
    Resource,
    add_hf_file,
    add_registry_model,
    killed_pull,
    sha256,
)

from vkrama.errors import ExitStatus

MiB = 1 << 20


@pytest.fixture
def model_bytes(tiny_model: Path) -> bytes:
    return tiny_model.read_bytes()


@pytest.fixture
def env(tmp_path: Path, server: LoopbackServer) -> dict[str, str]:
    return {
        "VKRAMA_MODELS_RETRIES": "1",
        "HF_ENDPOINT": server.url,
        "HF_HOME": str(tmp_path / "hf"),  # no token file, an empty cache
        "VKRAMA_MODELS_OLLAMA_REGISTRY": server.url,
    }


Run = Callable[..., "subprocess.CompletedProcess[str]"]


def listed(vkrama: Callable[..., object], env: dict[str, str]) -> list[dict[str, object]]:
    result = vkrama("list", "--json", env=env)
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    return list(json.loads(result.stdout))  # type: ignore[attr-defined]


def assert_clean_failure(result: object, status: ExitStatus, words: str) -> None:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == status, stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and words in errors[0], stderr


def test_pull_from_each_source_lists_sha256_and_gguf_facts(
    vkrama, env, server: LoopbackServer, model_bytes: bytes, tmp_path: Path
) -> None:
    digest = sha256(model_bytes)
    server.add("/files/tiny.gguf", Resource(body=model_bytes))
    add_hf_file(server, "org/tiny-GGUF", "tiny-F16.gguf", model_bytes)
    add_registry_model(server, "library/tiny", "latest", model_bytes,
                       "application/vnd.ollama.image.model", token="s3cret-token")  # fmt: skip
    local = tmp_path / "local.gguf"
    local.write_bytes(model_bytes)
    refs = [
        f"{server.url}/files/tiny.gguf",
        "hf://org/tiny-GGUF:F16",
        "hf://org/tiny-GGUF/tiny-F16.gguf",
        "ollama://tiny",
        str(local),
    ]
    for ref in refs:
        result = vkrama("pull", ref, env=env)
        assert result.returncode == 0, result.stderr
        assert digest in result.stdout
    assert "s3cret-token" not in json.dumps(server.requests[:0])  # (the server saw it; we don't)
    models = listed(vkrama, env)
    assert sorted(m["name"] for m in models) == sorted(
        [refs[0], "hf://org/tiny-GGUF:F16", refs[2], "ollama://tiny:latest", f"file://{local}"]
    )
    shape = examplemodel.SHAPES["tiny"]
    for m in models:
        assert m["sha256"] == digest
        assert m["size"] == len(model_bytes)
        assert m["metadata"] == {
            "architecture": "llama", "quantization": "F16",
            "parameter_count": shape.parameter_count, "context_length": 2048,
            "name": "vkrama-tiny", "tensor_count": 39, "split_count": 1,
        }  # fmt: skip
        assert Path(str(m["path"])).read_bytes() == model_bytes
    blobs = list((Path(os.environ["VKRAMA_HOME"]) / "models" / "blobs").iterdir())
    assert len(blobs) == 1, "five names for one file store it once"
    assert {m["source"] for m in models} == {"http", "hf", "ollama", "file"}


def test_pulling_twice_does_no_network_transfer(
    vkrama, env, server: LoopbackServer, model_bytes: bytes
) -> None:
    add_hf_file(server, "org/tiny-GGUF", "tiny-F16.gguf", model_bytes)
    assert vkrama("pull", "hf://org/tiny-GGUF:F16", env=env).returncode == 0
    seen = len(server.requests)
    again = vkrama("pull", "hf://org/tiny-GGUF:F16", env=env)
    assert again.returncode == 0, again.stderr
    assert len(server.requests) == seen


def test_huggingface_cache_is_reused_without_any_request(
    vkrama, env, server: LoopbackServer, model_bytes: bytes, tmp_path: Path
) -> None:
    digest = sha256(model_bytes)
    repo = tmp_path / "hf" / "hub" / "models--org--cached-GGUF"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / digest).write_bytes(model_bytes)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "m-Q4_0.gguf").symlink_to(f"../../blobs/{digest}")
    result = vkrama("--offline", "pull", "hf://org/cached-GGUF:Q4_0", env=env)
    assert result.returncode == 0, result.stderr
    assert server.requests == []
    assert listed(vkrama, env)[0]["sha256"] == digest


def test_killed_pull_resumes_and_refetches_under_a_mib(
    env, server: LoopbackServer, model_bytes: bytes, vkrama
) -> None:
    url = server.add("/slow/tiny.gguf", Resource(body=model_bytes, rate=2 * MiB))
    served_before = killed_pull(server, url, env, len(model_bytes) // 2, within=30)
    assert served_before < len(model_bytes), "the kill came too late to test resuming"
    server.routes["/slow/tiny.gguf"].rate = None
    result = vkrama("pull", url, env=env)
    assert result.returncode == 0, result.stderr
    refetched = server.bytes_served - served_before
    already_had = served_before
    assert refetched - (len(model_bytes) - already_had) < MiB, (refetched, already_had)
    assert any("Range" in headers for _, _, headers in server.requests[-1:])
    assert listed(vkrama, env)[0]["sha256"] == sha256(model_bytes)


def test_server_that_ignores_range_restarts_cleanly(
    vkrama, env, server: LoopbackServer, model_bytes: bytes
) -> None:
    url = server.add("/norange/tiny.gguf", Resource(body=model_bytes, ignore_range=True))
    part_dir = Path(os.environ["VKRAMA_HOME"]) / "models" / "partial"
    part_dir.mkdir(parents=True)
    from vkrama.store.blobs import key_for

    (part_dir / f"{key_for(url)}.part").write_bytes(b"GGUF-stale-bytes-from-before")
    result = vkrama("pull", url, env=env)
    assert result.returncode == 0, result.stderr
    assert listed(vkrama, env)[0]["sha256"] == sha256(model_bytes)


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        pytest.param("checksum", ExitStatus.CHECKSUM, "checksum mismatch",
                     id="wrong-linked-etag-is-a-checksum-error"),
        pytest.param("truncated", ExitStatus.INCOMPLETE, "truncated",
                     id="half-a-gguf-is-incomplete"),
        pytest.param("short", ExitStatus.INCOMPLETE, "incomplete",
                     id="fewer-bytes-than-linked-size-is-incomplete"),
        pytest.param("not-gguf", ExitStatus.INVALID_MODEL, "not a GGUF file",
                     id="html-instead-of-gguf-is-invalid"),
        pytest.param("404", ExitStatus.NOT_FOUND, "not found", id="missing-file-is-not-found"),
        pytest.param("401", ExitStatus.AUTH, "access denied", id="gated-repo-is-an-auth-error"),
        pytest.param("dropped", ExitStatus.NETWORK, "connection failed or dropped",
                     id="dropped-connection-is-a-network-error"),
    ],
)  # fmt: skip
def test_failures_are_one_line_with_distinct_codes_and_leave_nothing_listed(
    vkrama, env, server: LoopbackServer, model_bytes: bytes, case: str, status: ExitStatus,
    words: str,
) -> None:  # fmt: skip
    ref = {
        "checksum": "hf://org/bad/x.gguf",
        "short": "hf://org/short/x.gguf",
        "401": "hf://org/gated/x.gguf",
    }.get(case, f"{server.url}/{case}/x.gguf")
    add_hf_file(server, "org/bad", "x.gguf", model_bytes, etag="0" * 64)
    add_hf_file(server, "org/short", "x.gguf", model_bytes[: len(model_bytes) // 2],
                size=len(model_bytes))  # fmt: skip
    add_hf_file(server, "org/gated", "x.gguf", model_bytes, token="only-for-members")
    server.add("/truncated/x.gguf", Resource(body=model_bytes[: len(model_bytes) // 2]))
    server.add("/not-gguf/x.gguf", Resource(body=b"<html>login</html>"))
    server.add("/dropped/x.gguf", Resource(body=model_bytes, drop_after=1000))
    result = vkrama("pull", ref, env=env)
    assert_clean_failure(result, status, words)
    assert listed(vkrama, env) == []


def test_hf_token_is_sent_but_never_printed(
    vkrama, env, server: LoopbackServer, model_bytes: bytes
) -> None:
    add_hf_file(server, "org/gated", "x.gguf", model_bytes, token="hf_member_token")
    result = vkrama("-v", "pull", "hf://org/gated/x.gguf",
                    env={**env, "HF_TOKEN": "hf_member_token"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "hf_member_token" not in result.stdout + result.stderr
    listing = vkrama("list", "--json", env=env).stdout
    assert "hf_member_token" not in listing


def test_two_concurrent_pulls_both_succeed_with_one_copy(
    env, server: LoopbackServer, model_bytes: bytes, vkrama
) -> None:
    url = server.add("/c/tiny.gguf", Resource(body=model_bytes, rate=8 * MiB))
    procs = [
        subprocess.Popen([sys.executable, "-m", "vkrama", "pull", url], env={**os.environ, **env},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    home = Path(os.environ["VKRAMA_HOME"]) / "models"
    assert len(list((home / "blobs").iterdir())) == 1
    assert len(listed(vkrama, env)) == 1
    assert server.bytes_served < 2 * len(model_bytes)


def test_offline_never_opens_a_socket(
    env, server: LoopbackServer, model_bytes: bytes, vkrama, tmp_path: Path
) -> None:
    url = server.add("/o/tiny.gguf", Resource(body=model_bytes))
    # A child whose socket.socket raises: any connection attempt would show as a traceback.
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(
        "import socket\n"
        "class NoSocket(socket.socket):\n"
        "    def __init__(self, *a, **k):\n"
        "        raise RuntimeError('socket opened while offline')\n"
        "socket.socket = NoSocket\n"
    )
    guarded = {**env, "PYTHONPATH": str(guard)}
    result = vkrama("--offline", "pull", url, env=guarded)
    assert_clean_failure(result, ExitStatus.OFFLINE, "offline")
    assert server.requests == []
    assert vkrama("pull", url, env=env).returncode == 0
    requests_before = len(server.requests)
    again = vkrama("--offline", "pull", url, env=guarded)
    assert again.returncode == 0, again.stderr
    shown = vkrama("--offline", "inspect", url, "--json", env=guarded)
    assert json.loads(shown.stdout)["sha256"] == sha256(model_bytes)
    assert len(server.requests) == requests_before


def test_split_gguf_pulls_every_part(vkrama, env, server: LoopbackServer, tmp_path: Path) -> None:
    first = examplemodel.write(tmp_path / "split.gguf", "tiny", seed=1, split_max_tensors=20)
    parts = sorted(tmp_path.glob("split-*-of-*.gguf"))
    assert len(parts) == 2 and first == parts[0]
    for part in parts:
        server.add(f"/s/{part.name}", Resource(body=part.read_bytes()))
    result = vkrama("pull", f"{server.url}/s/{parts[0].name}", env=env)
    assert result.returncode == 0, result.stderr
    (model,) = listed(vkrama, env)
    assert [Path(str(f)).name for f in model["files"]] == [p.name for p in parts]  # type: ignore[union-attr]
    assert model["metadata"]["split_count"] == 2  # type: ignore[index]
    assert model["metadata"]["parameter_count"] == examplemodel.SHAPES["tiny"].parameter_count  # type: ignore[index]


def test_rm_forgets_the_name_and_keeps_shared_blobs(
    vkrama, env, server: LoopbackServer, model_bytes: bytes
) -> None:
    a = server.add("/a/tiny.gguf", Resource(body=model_bytes))
    b = server.add("/b/tiny.gguf", Resource(body=model_bytes))
    assert vkrama("pull", a, env=env).returncode == 0
    assert vkrama("pull", b, env=env).returncode == 0
    blobs = Path(os.environ["VKRAMA_HOME"]) / "models" / "blobs"
    assert vkrama("rm", a, env=env).returncode == 0
    assert [m["name"] for m in listed(vkrama, env)] == [b]
    assert len(list(blobs.iterdir())) == 1
    assert vkrama("rm", b, env=env).returncode == 0
    assert list(blobs.iterdir()) == []
    assert_clean_failure(vkrama("rm", b, env=env), ExitStatus.NOT_FOUND, "not in the store")
