"""`vkrama pull hf://…` fills the standard Hugging Face cache, and other tools find it there.

The reference is huggingface_hub itself: it downloads the same files from the same fake
endpoint into a second cache, and the two trees must match entry for entry. Then
huggingface_hub reads the cache vkrama wrote (`try_to_load_from_cache`, `scan_cache_dir`,
an offline `hf_hub_download`). HF_HOME and HF_HUB_CACHE point into tmp (conftest).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import examplemodel
import huggingface_hub
import pytest
from store_servers import LoopbackServer, add_hf_file, sha256
from test_pull import assert_clean_failure, listed

from vkrama.errors import ExitStatus

REPO = "org/tiny-GGUF"
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


@pytest.fixture
def env(server: LoopbackServer) -> dict[str, str]:
    return {"VKRAMA_MODELS_RETRIES": "1", "HF_ENDPOINT": server.url}


@pytest.fixture
def hub() -> Path:
    return Path(os.environ["HF_HUB_CACHE"])


def tree(cache: Path, repo: str) -> dict[str, str]:
    """Each entry of one repository's cache folder: what a symlink points at, a file's text."""
    root = cache / f"models--{repo.replace('/', '--')}"
    out = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            out[name] = "-> " + os.readlink(path)
        elif path.is_file():
            data = path.read_bytes()
            out[name] = data.decode() if name.startswith("refs/") else f"{len(data)} bytes"
        else:
            out[name] = "dir"
    return out


@pytest.fixture
def pulled(vkrama: Callable[..., object], env, server: LoopbackServer, tiny_model: Path) -> bytes:
    """The tiny model at COMMIT_A, pulled once with vkrama as `hf://REPO:F16`."""
    data = tiny_model.read_bytes()
    add_hf_file(server, REPO, "tiny-F16.gguf", data, commit=COMMIT_A)
    assert vkrama("pull", f"hf://{REPO}:F16", env=env).returncode == 0  # type: ignore[attr-defined]
    return data


def huggingface_hub_download(server: LoopbackServer, cache: Path, filename: str) -> Path:
    found = huggingface_hub.hf_hub_download(
        REPO, filename, cache_dir=cache, endpoint=server.url, token=False
    )
    return Path(str(found))


@pytest.mark.parametrize(
    ("files", "ref"),
    [
        pytest.param(["tiny-F16.gguf"], f"hf://{REPO}:F16", id="a-file-at-the-top"),
        pytest.param(["F16/tiny-F16-00001-of-00002.gguf", "F16/tiny-F16-00002-of-00002.gguf"],
                     f"hf://{REPO}:F16", id="a-split-model-in-a-folder"),
    ],
)  # fmt: skip
def test_pull_writes_the_cache_as_huggingface_hub_does(
    vkrama,
    env,
    server: LoopbackServer,
    hub: Path,
    tmp_path: Path,
    tiny_model: Path,
    files: list[str],
    ref: str,
) -> None:
    if len(files) == 1:
        blobs = [tiny_model.read_bytes()]
    else:
        (tmp_path / "m").mkdir()
        first = examplemodel.write(tmp_path / "m" / "split.gguf", "tiny", split_max_tensors=20)
        blobs = [p.read_bytes() for p in sorted(first.parent.glob("split-*.gguf"))]
    for name, data in zip(files, blobs, strict=True):
        add_hf_file(server, REPO, name, data, commit=COMMIT_A)
    result = vkrama("pull", ref, env=env)
    assert result.returncode == 0, result.stderr

    theirs = tmp_path / "huggingface_hub-cache"
    for name in files:
        huggingface_hub_download(server, theirs, name)
    assert tree(hub, REPO) == tree(theirs, REPO)
    assert tree(hub, REPO)["refs/main"] == COMMIT_A
    assert (
        (hub / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    )
    assert not list(hub.rglob("*.incomplete")) and not list(hub.rglob("*.tmp"))

    # Other tools read what vkrama wrote, without the network.
    for name, data in zip(files, blobs, strict=True):
        cached = huggingface_hub.try_to_load_from_cache(REPO, name, cache_dir=hub)
        assert isinstance(cached, str) and Path(cached).read_bytes() == data
        offline = huggingface_hub.hf_hub_download(REPO, name, cache_dir=hub, local_files_only=True)
        assert Path(str(offline)).read_bytes() == data
    (info,) = huggingface_hub.scan_cache_dir(hub).repos
    assert (info.repo_id, info.nb_files, info.size_on_disk) == (
        REPO,
        len(files),
        sum(map(len, blobs)),
    )
    assert [r.commit_hash for r in info.revisions] == [COMMIT_A]
    assert huggingface_hub.scan_cache_dir(hub).warnings == []

    # One copy of the bytes: vkrama's blob is the cache's blob (same file system here).
    (model,) = listed(vkrama, env)
    for stored, name in zip(model["files"], files, strict=True):  # type: ignore[call-overload]
        in_cache = hub / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT_A / name
        assert os.stat(stored).st_ino == os.stat(in_cache).st_ino


def test_what_vkrama_put_in_the_cache_serves_another_name_offline(
    vkrama, env, server: LoopbackServer, hub: Path, pulled: bytes
) -> None:
    data = pulled
    seen = len(server.requests)
    again = vkrama("--offline", "pull", f"hf://{REPO}/tiny-F16.gguf", env=env)
    assert again.returncode == 0, again.stderr
    assert len(server.requests) == seen
    assert {m["sha256"] for m in listed(vkrama, env)} == {sha256(data)}


def test_a_blob_the_cache_holds_is_linked_not_fetched(
    vkrama, env, server: LoopbackServer, hub: Path, pulled: bytes
) -> None:
    data = pulled
    served = server.bytes_served
    # main moved on, and the old snapshot was deleted; its blob (same etag) stayed.
    add_hf_file(server, REPO, "tiny-F16.gguf", data, commit=COMMIT_B)
    repo = hub / f"models--{REPO.replace('/', '--')}"
    shutil.rmtree(repo / "snapshots")
    (repo / "refs" / "main").unlink()
    result = vkrama("pull", f"hf://{REPO}/tiny-F16.gguf", env=env)
    assert result.returncode == 0, result.stderr
    assert server.bytes_served == served, "no body was downloaded again"
    assert tree(hub, REPO)["refs/main"] == COMMIT_B
    (info,) = huggingface_hub.scan_cache_dir(hub).repos
    assert [r.commit_hash for r in info.revisions] == [COMMIT_B]
    cached = huggingface_hub.try_to_load_from_cache(REPO, "tiny-F16.gguf", cache_dir=hub)
    assert isinstance(cached, str) and Path(cached).read_bytes() == data


def test_rm_leaves_the_huggingface_cache_to_its_other_users(
    vkrama, env, server: LoopbackServer, hub: Path, pulled: bytes
) -> None:
    assert vkrama("rm", f"hf://{REPO}:F16", env=env).returncode == 0
    assert list((Path(os.environ["VKRAMA_HOME"]) / "models" / "blobs").iterdir()) == []
    cached = huggingface_hub.try_to_load_from_cache(REPO, "tiny-F16.gguf", cache_dir=hub)
    assert isinstance(cached, str) and Path(cached).read_bytes() == pulled


@pytest.mark.parametrize(
    ("etag", "size", "status", "words"),
    [
        pytest.param("0" * 64, None, ExitStatus.CHECKSUM, "checksum mismatch",
                     id="a-wrong-checksum-in-the-last-part"),
        pytest.param(None, 10**6, ExitStatus.INCOMPLETE, "incomplete",
                     id="a-last-part-shorter-than-announced"),
    ],
)  # fmt: skip
def test_a_bad_part_of_a_split_model_leaves_no_part_behind(
    vkrama, env, server: LoopbackServer, hub: Path, tmp_path: Path, etag: str | None,
    size: int | None, status: ExitStatus, words: str,
) -> None:  # fmt: skip
    (tmp_path / "m").mkdir()
    first = examplemodel.write(tmp_path / "m" / "split.gguf", "tiny", split_max_tensors=20)
    parts = sorted(first.parent.glob("split-*.gguf"))
    add_hf_file(server, REPO, parts[0].name, parts[0].read_bytes())
    last = parts[1].read_bytes()
    add_hf_file(server, REPO, parts[1].name, last[: len(last) // 2] if size else last,
                etag=etag, size=size and len(last))  # fmt: skip
    result = vkrama("pull", f"hf://{REPO}/{parts[0].name}", env=env)
    assert_clean_failure(result, status, words)
    partial = Path(os.environ["VKRAMA_HOME"]) / "models" / "partial"
    assert list(partial.iterdir()) == [], "the good first part went too"
    assert listed(vkrama, env) == []
    assert not (hub / f"models--{REPO.replace('/', '--')}").exists()


def test_two_names_for_one_file_pulled_at_once_download_it_once(
    env, server: LoopbackServer, hub: Path, tiny_model: Path, vkrama
) -> None:
    data = tiny_model.read_bytes()
    add_hf_file(server, REPO, "tiny-F16.gguf", data, commit=COMMIT_A)
    server.routes[f"/cdn/{sha256(data)}"].rate = 8 << 20  # slow enough to overlap
    procs = [
        subprocess.Popen([sys.executable, "-m", "vkrama", "pull", ref], env={**os.environ, **env},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for ref in (f"hf://{REPO}:F16", f"hf://{REPO}/tiny-F16.gguf")
    ]  # fmt: skip
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    downloads = [path for method, path, _ in server.requests if path.startswith("/cdn/")]
    assert downloads == [f"/cdn/{sha256(data)}"], "the second waited, then took the first's blob"
    assert len(listed(vkrama, env)) == 2
    assert len(list((Path(os.environ["VKRAMA_HOME"]) / "models" / "blobs").iterdir())) == 1
