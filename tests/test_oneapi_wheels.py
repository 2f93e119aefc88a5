"""The oneapi image's wheels: fetched once into the cache and sha256-checked on the host,
staged into the build context by hard link, and checked again by the build's own script,
which names a missing, changed or unpinned wheel in one line. A loopback server stands in
for PyPI; the script is the real containerfiles/oneapi-runtime.sh run by `sh`."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_servers import LoopbackServer, Resource

from vkrama import config, images
from vkrama.errors import ExitStatus, VkramaError
from vkrama.images import oneapi
from vkrama.images.planning import StagedContext
from vkrama.progress import BuildProgress, Event

SCRIPT = Path(__file__).resolve().parent.parent / "containerfiles" / "oneapi-runtime.sh"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


def wheel(
    server: LoopbackServer, name: str, body: bytes, pinned: bytes | None = None
) -> oneapi.Wheel:
    """A wheel on the loopback server, pinned to `pinned` (default: what it serves)."""
    filename = f"{name}-1.0-py3-none-any.whl"
    url = server.add(f"/packages/{filename}", Resource(body=body))
    return oneapi.Wheel(name, url, hashlib.sha256(pinned or body).hexdigest())


def test_wheels_are_fetched_once_and_checked_every_time(
    server: LoopbackServer, isolated_state: Path
) -> None:
    pins = (wheel(server, "umf", b"umf wheel"), wheel(server, "tbb", b"tbb wheel"))
    seen: list[Event] = []
    first = oneapi.fetch_wheels(isolated_state, pins, seen.append)
    assert [p.read_bytes() for p in first] == [b"umf wheel", b"tbb wheel"]
    assert seen == [BuildProgress("oneapi", 0, 0, f"fetching {w.url}") for w in pins]
    assert oneapi.fetch_wheels(isolated_state, pins) == first
    assert len(server.requests) == 2  # the second time, from the cache
    first[0].write_bytes(b"damaged in the cache")
    assert oneapi.fetch_wheels(isolated_state, pins)[0].read_bytes() == b"umf wheel"
    assert len(server.requests) == 3  # only the damaged one again


def test_a_changed_wheel_on_the_server_is_named_and_nothing_is_kept(
    server: LoopbackServer, isolated_state: Path
) -> None:
    changed = wheel(server, "mkl", b"not what was pinned", pinned=b"the pinned wheel")
    with pytest.raises(VkramaError) as caught:
        oneapi.fetch_wheels(isolated_state, (changed,))
    assert caught.value.status == ExitStatus.CHECKSUM
    assert caught.value.message.startswith("mkl-1.0-py3-none-any.whl: sha256 ")
    assert caught.value.message.endswith(f" is not the pinned {changed.sha256}")
    assert list((isolated_state / "cache" / "wheels").iterdir()) == []


def test_a_missing_wheel_names_the_package_and_the_server(
    server: LoopbackServer, isolated_state: Path
) -> None:
    url = server.add("/packages/onednn-2025.3.0-py3-none-any.whl", Resource(status=404))
    with pytest.raises(VkramaError) as caught:
        oneapi.fetch_wheels(isolated_state, (oneapi.Wheel("onednn", url, "0" * 64),))
    assert caught.value.status == ExitStatus.NETWORK
    assert caught.value.message == (
        f"cannot fetch onednn 2025.3.0 for the oneapi image from 127.0.0.1:{server.port}: HTTP 404"
    )


def test_staging_links_the_pinned_wheels_into_the_context_and_drops_others(
    server: LoopbackServer, isolated_state: Path, tmp_path: Path
) -> None:
    pins = (wheel(server, "umf", b"umf wheel"),)
    planned = images.plan("oneapi", config.load())
    assert planned.staged is not None
    context = tmp_path / "context"
    context.mkdir()
    (context / "stale-0.9-py3-none-any.whl").write_bytes(b"from an older pin")
    staged = StagedContext(context, isolated_state, None, pins)
    images.stage(type(planned)(planned.recipe, {}, (), staged=staged))
    assert sorted(p.name for p in context.iterdir()) == sorted(
        [*(p.name for p in planned.recipe.inputs), "umf-1.0-py3-none-any.whl"]
    )
    cached = isolated_state / "cache" / "wheels" / "umf-1.0-py3-none-any.whl"
    assert (context / "umf-1.0-py3-none-any.whl").samefile(cached)  # linked, not copied


def run_script(tmp_path: Path, served: dict[str, bytes], pinned: dict[str, bytes]) -> str:
    """The build's check of the context: pins for `pinned`, the files `served`; its stderr."""
    lines = [
        f"{name.split('-')[0]} @ https://files.example/{name} \\\n"
        f"    --hash=sha256:{hashlib.sha256(body).hexdigest()}"
        for name, body in pinned.items()
    ]
    (tmp_path / "pins.txt").write_text("# pins\n" + "\n".join(lines) + "\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name, body in served.items():
        (wheels / name).write_bytes(body)
    done = subprocess.run(
        ["sh", str(SCRIPT), str(tmp_path / "pins.txt"), str(wheels), str(tmp_path / "opt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    return done.stderr


A = "a-1.0-py3-none-any.whl"
B = "b-2.0-py3-none-any.whl"


def test_the_build_names_a_missing_wheel(tmp_path: Path) -> None:
    said = run_script(tmp_path, {A: b"a"}, {A: b"a", B: b"b"})
    assert f"{B}: FAILED open or read" in said
    assert said.rstrip().endswith("the wheels above are missing or not the pinned files")


def test_the_build_names_a_changed_wheel(tmp_path: Path) -> None:
    said = run_script(tmp_path, {A: b"a", B: b"changed"}, {A: b"a", B: b"b"})
    assert f"{B}: FAILED\n" in said and f"{A}: FAILED" not in said


def test_the_build_refuses_an_unpinned_file(tmp_path: Path) -> None:
    said = run_script(tmp_path, {A: b"a", B: b"b"}, {A: b"a"})
    assert said.strip() == f"oneapi-runtime.sh: unpinned files in {tmp_path / 'wheels'}: {B}"
