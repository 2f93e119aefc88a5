"""`vkrama images build rocm --llama-source URL|FILE`: the ROCm 7 image compiled from a llama.cpp
release tarball the user names (upstream's b11669, the build every other image has, on a
machine that reaches GitHub) instead of PyPI's 11434 sdist.

Compiling takes over an hour here, so these tests stop where the build would start: what the
plan passes, and the staged context a real loopback server's tarball ends up in. The compile
and the provenance it yields are tests/test_rocm7_image.py's.
"""

from __future__ import annotations

import io
import shlex
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakesys import FakeHost, amd_dgpu_with_kfd, rx_9070_xt
from store_servers import LoopbackServer, Resource
from test_devices_cli import roots

from vkrama import config, images
from vkrama.errors import ExitStatus, VkramaError
from vkrama.images import rocm
from vkrama.progress import BuildProgress, Event

UPSTREAM = "https://github.com/ggml-org/llama.cpp/archive/refs/tags/b11669.tar.gz"


def tarball(top: str = "llama.cpp-b11669", ggml: tuple[int, int, int] = (0, 27, 0)) -> bytes:
    """A llama.cpp source tarball laid out as upstream's archive is (the parts the recipe
    reads: ggml-hip's folder, ggml's version, build-info.cmake)."""
    files = {
        f"{top}/ggml/src/ggml-hip/CMakeLists.txt": b"# ggml-hip\n",
        f"{top}/ggml/CMakeLists.txt": "".join(
            f"set(GGML_VERSION_{part} {n})\n"
            for part, n in zip(("MAJOR", "MINOR", "PATCH"), ggml, strict=True)
        ).encode(),
        f"{top}/cmake/build-info.cmake": b'set(BUILD_NUMBER 0)\nset(BUILD_COMMIT "unknown")\n',
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def build_args(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, flag in enumerate(argv) if flag == "--build-arg"]
    return dict(pair.split("=", 1) for pair in pairs)


# -- what the user names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "build"),
    [
        (UPSTREAM, "11669"),
        ("https://example.org/releases/llama.cpp-b11669.tar.gz", "11669"),
        ("https://example.org/b9000.tgz", "9000"),
    ],
    ids=["github-archive-of-a-tag", "release-file", "tgz"],
)
def test_the_build_number_comes_from_upstreams_name(spec: str, build: str) -> None:
    source = rocm.user_source(spec)
    assert (source.build, source.sha256, source.local) == (build, "", False)
    # Provenance records an unpinned source by where it came from.
    assert source.recorded_as == spec


@pytest.mark.parametrize(
    ("spec", "says", "hint"),
    [
        ("https://example.org/llama.cpp-master.tar.gz", "does not say its llama.cpp build",
         "--build-arg LLAMA_CPP_BUILD="),
        ("https://example.org/b11669.zip", "not a .tar.gz", "archive/refs/tags/b11669.tar.gz"),
        ("no-such-file-b11669.tar.gz", "no such file", "https:// address"),
    ],
    ids=["no-build-number", "not-a-tarball", "missing-local-file"],
)  # fmt: skip
def test_a_source_vkrama_cannot_use_is_a_usage_error(spec: str, says: str, hint: str) -> None:
    with pytest.raises(VkramaError) as caught:
        rocm.user_source(spec)
    assert caught.value.status == ExitStatus.USAGE
    assert says in caught.value.message and hint in (caught.value.hint or "")


def test_a_build_number_given_by_hand_names_any_tarball() -> None:
    assert rocm.user_source("https://example.org/master.tar.gz", build="11700").build == "11700"


# -- what `images build` plans ------------------------------------------------------------------


def test_dry_run_compiles_the_named_source_for_the_gpus_found(
    tmp_path: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path)
    rx_9070_xt(host)
    done = vkrama("--dry-run", "images", "build", "rocm", "--llama-source", UPSTREAM,
                  env=roots(host))  # fmt: skip
    assert done.returncode == 0, done.stderr
    argv = shlex.split(done.stdout.strip().splitlines()[-1])  # after the staging lines
    assert Path(argv[argv.index("-f") + 1]).name == "rocm7.Containerfile"
    assert build_args(argv) == {
        "BASE": "docker.io/library/debian:sid",
        "GFX_TARGETS": "gfx1201",
        "LLAMA_CPP_BUILD": "11669",
        "LLAMA_CPP_SOURCE_NAME": UPSTREAM,
    }


def test_a_named_source_asks_for_the_source_build_even_where_debians_would_do(
    tmp_path: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path)
    amd_dgpu_with_kfd(host)  # an RX 7900 XTX: Debian's ROCm 6.4 build covers its gfx1100
    done = vkrama("--dry-run", "images", "build", "rocm", "--llama-source", UPSTREAM,
                  env=roots(host))  # fmt: skip
    assert done.returncode == 0, done.stderr
    argv = shlex.split(done.stdout.strip().splitlines()[-1])  # after the staging lines
    assert Path(argv[argv.index("-f") + 1]).name == "rocm7.Containerfile"
    assert build_args(argv)["GFX_TARGETS"] == "gfx1100"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["cpu"], "Error: --llama-source applies to the rocm image only"),
        (["rocm"], "Error: --llama-source: no AMD GPU found here to compile it for"),
    ],
    ids=["another-backend", "no-amd-gpu-and-no-gfx"],
)
def test_llama_source_without_a_rocm_source_build_is_refused(
    args: list[str], says: str, tmp_path: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path)  # no GPU at all
    done = vkrama("--dry-run", "images", "build", *args, "--llama-source", UPSTREAM,
                  env=roots(host))  # fmt: skip
    assert done.returncode == ExitStatus.USAGE
    error, hint = done.stderr.strip().splitlines()
    assert error == says and hint.startswith("Hint: ")


# -- fetching and staging, against a real loopback server ---------------------------------------


def plan_for(spec: str, home: Path) -> images.BuildPlan:
    settings = config.load()
    assert settings.home == home
    return images.plan("rocm", settings, gfx=("gfx1201",), source=rocm.user_source(spec))


def test_the_named_tarball_is_fetched_once_and_staged_as_the_recipe_copies_it(
    server: LoopbackServer, isolated_state: Path
) -> None:
    body = tarball()
    url = server.add("/ggml-org/llama.cpp/archive/refs/tags/b11669.tar.gz", Resource(body=body))
    planned = plan_for(url, isolated_state)
    seen: list[Event] = []
    images.stage(planned, seen.append)
    images.stage(planned, seen.append)
    staged = planned.context
    assert (staged / rocm.SOURCE_NAME).read_bytes() == body
    assert (staged / "rocm7.Containerfile").is_file() and (staged / "provenance.sh").is_file()
    # Once over the wire, then from the cache.
    assert [r[1] for r in server.requests] == [
        "/ggml-org/llama.cpp/archive/refs/tags/b11669.tar.gz"
    ]
    assert seen == [BuildProgress("rocm", 0, 0, f"fetching llama.cpp source {url}")]


def test_two_addresses_with_the_same_file_name_are_two_sources(
    server: LoopbackServer, isolated_state: Path
) -> None:
    ours = server.add("/ours/b11669.tar.gz", Resource(body=tarball("ours-b11669")))
    fork = server.add("/fork/b11669.tar.gz", Resource(body=tarball("fork-b11669")))
    first = rocm.fetch_source(isolated_state, rocm.user_source(ours))
    second = rocm.fetch_source(isolated_state, rocm.user_source(fork))
    assert first != second
    assert first.read_bytes() != second.read_bytes()


def test_a_failed_fetch_says_where_from_and_leaves_nothing(
    server: LoopbackServer, isolated_state: Path
) -> None:
    url = server.add("/b11669.tar.gz", Resource(status=404))
    with pytest.raises(VkramaError) as caught:
        rocm.fetch_source(isolated_state, rocm.user_source(url))
    error = caught.value
    assert error.status == ExitStatus.NETWORK
    assert error.message.endswith(f"from 127.0.0.1:{server.port}: HTTP 404")
    assert (
        error.hint
        == f"the ROCm 7 build needs 127.0.0.1:{server.port} once; later builds use the cache"
    )
    cache = isolated_state / "cache" / "llama.cpp"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_connection_dropped_midway_leaves_no_partial_file(
    server: LoopbackServer, isolated_state: Path
) -> None:
    url = server.add("/b11669.tar.gz", Resource(body=tarball() * 50, drop_after=4096))
    with pytest.raises(VkramaError) as caught:
        rocm.fetch_source(isolated_state, rocm.user_source(url))
    assert caught.value.status == ExitStatus.NETWORK
    assert list((isolated_state / "cache" / "llama.cpp").iterdir()) == []


def test_a_local_tarball_is_staged_from_where_it_is(tmp_path: Path, isolated_state: Path) -> None:
    source = tmp_path / "llama.cpp-b11669.tar.gz"
    source.write_bytes(tarball())
    planned = plan_for(str(source), isolated_state)
    assert planned.build_args["LLAMA_CPP_SOURCE_NAME"] == str(source)
    images.stage(planned)
    assert (planned.context / rocm.SOURCE_NAME).read_bytes() == source.read_bytes()
    assert not (isolated_state / "cache" / "llama.cpp").exists()  # nothing copied to the cache
