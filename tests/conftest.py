"""Shared fixtures: isolated state per test, a real podman engine, the tiny example model.

Every test gets its own VKRAMA_HOME and config directory, so nothing a test writes leaks
into another or into the user's state. Fixtures that need podman connect to the real one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import examplemodel
import pytest
from store_servers import LoopbackServer

from vkrama import config
from vkrama.engine import Podman, connect

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh VKRAMA_HOME and an empty config directory for every test."""
    home = tmp_path / "vkrama-home"
    monkeypatch.setenv("VKRAMA_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for var in [v for v in os.environ if v.startswith("VKRAMA_") and v != "VKRAMA_HOME"]:
        monkeypatch.delenv(var)
    # The output check before a bench (a CPU reference, then each stack's server) is tested
    # by tests/test_check_*.py; elsewhere it would add minutes to every bench test here.
    monkeypatch.setenv("VKRAMA_BENCH_CHECK", "false")
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    # Pulls from Hugging Face write into its cache: never the user's.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return home


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A loopback HTTP server for the store's tests (tests/store_servers.py)."""
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def settings() -> config.Settings:
    return config.load()


@pytest.fixture(scope="session")
def engine() -> Podman:
    """The real podman, found or started the way `vkrama` itself does it."""
    return connect(config.load())


@pytest.fixture(scope="session")
def backend_image(engine: Podman) -> Callable[[str], str]:
    """`backend_image("vulkan")`: that backend's image, built here if this machine lacks it.

    A test that runs an image must not pass only because an earlier test (or an earlier
    run of the suite) happened to build it: a fresh machine has none."""
    refs: dict[str, str] = {}

    def ensure(backend: str) -> str:
        if backend not in refs:
            from vkrama import images

            refs[backend] = images.ensure(engine, backend, config.load()).ref
        return refs[backend]

    return ensure


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight llama GGUF (F16, ~4 M parameters), made once per session."""
    return examplemodel.make("tiny", tmp_path_factory.mktemp("models") / "tiny.gguf", 0, None)


@pytest.fixture(scope="session")
def tiny_bpe_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another architecture (qwen2), tokenizer (GPT-2 byte-level BPE) and chat template
    (Llama-3-style headers) than `tiny_model`, as small."""
    path = tmp_path_factory.mktemp("models") / "tiny-bpe.gguf"
    return examplemodel.make("tiny-bpe", path, 0, None)


@pytest.fixture(scope="session")
def ranged_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~44 MB random-weight llama GGUF: large enough for a pull in parallel ranges."""
    shape = examplemodel.Shape("vkrama-ranged", 512, 4, 8, 8, 1536, 8000, 512)
    return examplemodel.write(tmp_path_factory.mktemp("models") / "ranged.gguf", shape)


@dataclass
class Result:
    """A finished `vkrama` process."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def vkrama(isolated_state: Path) -> Iterator[Callable[..., Result]]:
    """Run the real `vkrama` CLI in a subprocess: `vkrama("info", "--json")`."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Result:
        done = subprocess.run(
            [sys.executable, "-m", "vkrama", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    yield run
