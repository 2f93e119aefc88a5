"""A hostile hub, registry or reference cannot make `vkrama pull` write outside its stores.

Every case runs the real CLI against a loopback server that sends what a hostile server
could: commits, etags, file lists, digests and layer titles holding `..`, absolute paths,
backslashes, NUL bytes or their percent-encodings; and references a user could type with the
same. Each must end in one `Error:` line with exit code UNSAFE_NAME (20), no traceback, and
nothing written: a victim file next to the stores stays byte-identical, and the only new
files anywhere under the test's folder are vkrama's lock files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from store_servers import (
    LoopbackServer,
    Resource,
    add_hf_file,
    add_manifest,
    add_registry_model,
    set_hf_listing,
    sha256,
)

from vkrama.errors import ExitStatus, VkramaError
from vkrama.store import names

GGUF_LAYER = "application/vnd.cncf.model.weight.v1.gguf"
OLLAMA_LAYER = "application/vnd.ollama.image.model"
VICTIM = b"a file outside every store that a hostile name aims at\n"


@pytest.fixture
def env(server: LoopbackServer) -> dict[str, str]:
    return {
        "VKRAMA_MODELS_RETRIES": "0",
        "HF_ENDPOINT": server.url,
        "VKRAMA_MODELS_OLLAMA_REGISTRY": server.url,
    }


def files_under(root: Path) -> dict[str, bytes]:
    """Every file and symlink under `root` with its bytes (a symlink: its target)."""
    found = {}
    for path in root.rglob("*"):
        if path.is_symlink():
            found[str(path.relative_to(root))] = os.readlink(path).encode()
        elif path.is_file():
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


Serve = Callable[[LoopbackServer, bytes], str]  # sets a server up; returns the ref to pull


@dataclass(frozen=True)
class Case:
    """What the server holds (set up by `serve`, which returns the reference to pull)."""

    serve: Serve
    words: str  # in the one Error: line
    status: ExitStatus = ExitStatus.UNSAFE_NAME


def hf(filename: str = "tiny-F16.gguf", **kw: object) -> Serve:
    def serve(server: LoopbackServer, data: bytes) -> str:
        add_hf_file(server, "org/tiny-GGUF", filename, data, **kw)  # type: ignore[arg-type]
        return "hf://org/tiny-GGUF:F16"

    return serve


def hf_listing(body: bytes) -> Serve:
    def serve(server: LoopbackServer, data: bytes) -> str:
        add_hf_file(server, "org/tiny-GGUF", "tiny-F16.gguf", data)
        set_hf_listing(server, "org/tiny-GGUF", body)
        return "hf://org/tiny-GGUF:F16"

    return serve


def user(ref: str) -> Serve:
    def serve(server: LoopbackServer, data: bytes) -> str:
        add_hf_file(server, "org/tiny-GGUF", "tiny-F16.gguf", data)
        server.add("/files/tiny.gguf", Resource(body=data))
        return ref.replace("SERVER", server.url)

    return serve


def oci(
    layer: dict[str, object] | None = None,
    title: str | None = None,
    manifest: dict[str, object] | None = None,
) -> Serve:
    def serve(server: LoopbackServer, data: bytes) -> str:
        digest = f"sha256:{sha256(data)}"
        annotations = {"org.opencontainers.image.title": title} if title is not None else {}
        base = {"mediaType": GGUF_LAYER, "digest": digest, "size": len(data),
                "annotations": annotations}  # fmt: skip
        add_manifest(server, "ai/tiny", "latest", [{**base, **(layer or {})}],
                     blobs={digest: data}, manifest=manifest)  # fmt: skip
        return f"oci://127.0.0.1:{server.port}/ai/tiny:latest"

    return serve


def ollama_layer(digest: str) -> Serve:
    def serve(server: LoopbackServer, data: bytes) -> str:
        layer = {"mediaType": OLLAMA_LAYER, "digest": digest, "size": len(data)}
        add_manifest(server, "library/tiny", "latest", [layer])
        return "ollama://tiny"

    return serve


ESCAPE = "../../../../victim.gguf"  # from a cache folder up to the test's folder
HOSTILE_INDEX: dict[str, object] = {
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{"digest": "../../../blobs/x"}],
}

CASES = {
    # A Hugging Face endpoint's headers and file list.
    "hf-commit-header-with-dotdot": Case(hf(commit="../../../../victim-dir"), "unsafe commit"),
    "hf-commit-header-not-40-hex": Case(hf(commit="main"), "unsafe commit"),
    "hf-linked-etag-with-dotdot": Case(hf(etag=ESCAPE), "unsafe etag"),
    "hf-linked-etag-absolute": Case(hf(etag="/tmp/victim.gguf"), "unsafe etag"),
    "hf-tree-file-with-dotdot": Case(hf(filename="../../evil-F16.gguf"), "unsafe file path"),
    "hf-tree-file-with-inner-dotdot": Case(
        hf(filename="dir/../../../evil-F16.gguf"), "unsafe file path"
    ),
    "hf-tree-file-absolute": Case(hf(filename="/tmp/evil-F16.gguf"), "unsafe file path"),
    "hf-tree-file-with-backslash": Case(hf(filename="..\\evil-F16.gguf"), "unsafe file path"),
    "hf-tree-file-with-nul": Case(hf(filename="evil\x00-F16.gguf"), "unsafe file path"),
    "hf-tree-file-percent-encoded-dotdot": Case(
        hf(filename="%2e%2e/%2e%2e/evil-F16.gguf"), "unsafe file path"
    ),
    "hf-tree-path-not-text": Case(
        hf_listing(b'[{"type": "file", "path": ["x-F16.gguf"]}]'), "unsafe file path"
    ),
    "hf-tree-not-a-list": Case(
        hf_listing(b'{"path": "x"}'), "is not a JSON list", ExitStatus.NETWORK
    ),
    "hf-tree-not-json": Case(hf_listing(b"<html>"), "is not a JSON list", ExitStatus.NETWORK),
    # References a user types.
    "user-hf-file-with-dotdot": Case(user("hf://org/tiny-GGUF/../../victim.gguf"), "file path"),
    "user-hf-file-percent-encoded": Case(user("hf://org/tiny-GGUF/%2e%2e/x.gguf"), "file path"),
    "user-hf-file-with-backslash": Case(user("hf://org/tiny-GGUF/..\\x.gguf"), "file path"),
    "user-hf-revision-with-dotdot": Case(
        user("hf://org/tiny-GGUF/tiny-F16.gguf@../../../../victim"), "unsafe revision"
    ),
    "user-hf-revision-percent-encoded": Case(
        user("hf://org/tiny-GGUF:F16@%2e%2e/%2e%2e"), "unsafe revision"
    ),
    "user-hf-org-dotdot": Case(user("hf://../tiny-GGUF:F16"), "unsafe repository name"),
    "user-ollama-name-dotdot": Case(user("ollama://../../tiny"), "unsafe repository"),
    "user-ollama-digest-with-dotdot": Case(
        user("ollama://tiny@sha256:../../../victim"), "unsafe digest"
    ),
    "user-ollama-digest-percent-encoded": Case(user("ollama://tiny@sha256:%2e%2e"), "digest"),
    "user-oci-repository-dotdot": Case(user("oci://127.0.0.1:1/a/../b:x"), "unsafe repository"),
    "user-url-last-segment-percent-dotdot": Case(user("SERVER/files/%2e%2e"), "unsafe file name"),
    "user-url-last-segment-encoded-slash": Case(
        user("SERVER/files/..%2f..%2fvictim.gguf"), "unsafe file name"
    ),
    "user-url-last-segment-nul": Case(user("SERVER/files/x%00.gguf"), "unsafe file name"),
    "user-sha256-with-dotdot": Case(
        lambda s, d: user("SERVER/files/tiny.gguf")(s, d) + " --sha256 ../../../../victim",
        "is not 64 hex characters",
        ExitStatus.USAGE,
    ),
    # Registries' manifests.
    "ollama-layer-digest-with-dotdot": Case(
        ollama_layer("sha256:../../../../victim"), "unsafe digest"
    ),
    "ollama-layer-digest-not-sha256": Case(ollama_layer("md5:abc"), "unsafe digest"),
    "ollama-layer-digest-missing": Case(ollama_layer(None), "unsafe digest"),  # type: ignore[arg-type]
    "oci-layer-title-with-dotdot": Case(oci(title=ESCAPE), "unsafe file path"),
    "oci-layer-title-absolute": Case(oci(title="/tmp/victim.gguf"), "unsafe file path"),
    "oci-layer-title-with-backslash": Case(oci(title="..\\victim.gguf"), "unsafe file path"),
    "oci-layer-title-with-nul": Case(oci(title="x\x00.gguf"), "unsafe file path"),
    "oci-layer-filepath-dotdot": Case(
        oci(layer={"annotations": {"org.cncf.model.filepath": "../x.gguf"}}), "unsafe file path"
    ),
    "oci-layer-digest-with-dotdot": Case(oci(layer={"digest": "sha256:" + ESCAPE}), "digest"),
    "oci-layer-digest-uppercase-hex": Case(
        oci(layer={"digest": "sha256:" + "A" * 64}), "unsafe digest"
    ),
    "oci-index-entry-digest-with-dotdot": Case(oci(manifest=HOSTILE_INDEX), "unsafe digest"),
    "oci-manifest-not-an-object": Case(
        oci(manifest=["not", "a", "manifest"]),  # type: ignore[arg-type]
        "not a JSON object",
        ExitStatus.NETWORK,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_hostile_name_is_refused_and_nothing_is_written(
    vkrama: Callable[..., Any],
    env: dict[str, str],
    server: LoopbackServer,
    tiny_model: Path,
    tmp_path: Path,
    case: Case,
) -> None:
    victim = tmp_path / "victim.gguf"
    victim.write_bytes(VICTIM)
    (tmp_path / "victim-dir").mkdir()
    before = files_under(tmp_path)
    ref, *flags = case.serve(server, tiny_model.read_bytes()).split()

    result = vkrama("pull", ref, *flags, env=env)

    assert result.returncode == case.status, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and case.words in errors[0], result.stderr
    assert result.stderr.count("\n") <= 2, "one Error: line and one Hint: line"
    after = files_under(tmp_path)
    assert victim.read_bytes() == VICTIM
    assert {p: after[p] for p in before} == before, "a file that was there changed"
    new = sorted(set(after) - set(before))
    assert all(p.startswith("vkrama-home/models/locks/") for p in new), new


def test_a_file_list_that_only_mentions_a_hostile_name_still_fails(
    vkrama: Callable[..., Any], env: dict[str, str], server: LoopbackServer, tiny_model: Path
) -> None:
    # A server that lists an escaping name beside a good one is not to be trusted at all.
    add_hf_file(server, "org/tiny-GGUF", "tiny-F16.gguf", tiny_model.read_bytes())
    add_hf_file(server, "org/tiny-GGUF", "../../../notes.txt", b"x")
    result = vkrama("pull", "hf://org/tiny-GGUF:F16", env=env)
    assert result.returncode == ExitStatus.UNSAFE_NAME, result.stderr


def test_safe_names_from_the_same_servers_still_pull(
    vkrama: Callable[..., Any], env: dict[str, str], server: LoopbackServer, tiny_model: Path
) -> None:
    data = tiny_model.read_bytes()
    add_hf_file(server, "org/tiny-GGUF", "sub/dir/tiny-F16.gguf", data)
    oci(title="models/tiny.v1_final-F16.gguf")(server, data)
    add_registry_model(server, "library/tiny", "latest", data, OLLAMA_LAYER, token="t")
    server.add("/files/tiny%20model.gguf", Resource(body=data))
    refs = ["hf://org/tiny-GGUF:F16", f"oci://127.0.0.1:{server.port}/ai/tiny:latest",
            "ollama://tiny", f"{server.url}/files/tiny%20model.gguf"]  # fmt: skip
    for ref in refs:
        result = vkrama("pull", ref, env=env)
        assert result.returncode == 0, (ref, result.stderr)
    listed = json.loads(vkrama("list", "--json", env=env).stdout)
    assert {Path(m["path"]).name for m in listed} == {
        "tiny-F16.gguf", "tiny.v1_final-F16.gguf", "tiny-latest.gguf", "tiny model.gguf"
    }  # fmt: skip


SAFE_PATHS = ["model.gguf", "sub/dir/model-Q4_K_M.gguf", "a..b.gguf", "refs/pr/1", "v1.0"]
UNSAFE_PATHS = ["", "..", "a/../b", "/abs", "a//b", "./a", "a\\b", "a\x00b", "%2e%2e",
                "a%2F..%2Fb", "C:x", "a\nb"]  # fmt: skip


@pytest.mark.parametrize("value", SAFE_PATHS)
def test_repo_path_accepts(value: str) -> None:
    assert names.repo_path(value, "test") == value


@pytest.mark.parametrize("value", UNSAFE_PATHS)
def test_repo_path_refuses(value: str) -> None:
    with pytest.raises(VkramaError) as caught:
        names.repo_path(value, "test")
    assert caught.value.status == ExitStatus.UNSAFE_NAME
    assert "\n" not in caught.value.message


def test_inside_refuses_a_path_that_a_symlink_leads_out(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    assert names.inside(root, root / "a" / "b") == root / "a" / "b"
    with pytest.raises(VkramaError):
        names.inside(root, root / "link" / "victim")
    with pytest.raises(VkramaError):
        names.inside(root, root / "a" / ".." / ".." / "victim")
