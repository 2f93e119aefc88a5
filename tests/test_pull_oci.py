"""`vkrama pull oci://…` from a real OCI registry (Debian's docker-registry on loopback).

The test pushes GGUF artifacts in the CNCF ModelPack and Docker model-runner media types with
the plain distribution API, then pulls them with the real CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_servers import docker_registry, push_artifact, sha256

from vkrama.errors import ExitStatus

MODELPACK = (
    "application/vnd.cncf.model.manifest.v1+json",
    "application/vnd.cncf.model.config.v1+json",
    "application/vnd.cncf.model.weight.v1.raw",
)
DOCKER_AI = (
    "application/vnd.docker.ai.model",  # Docker model-runner's artifact type
    "application/vnd.docker.ai.model.config.v0.1+json",
    "application/vnd.docker.ai.gguf.v3",
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with docker_registry(tmp_path_factory.mktemp("registry")) as host:
        yield host


@pytest.mark.parametrize(
    ("kind", "title_key"),
    [
        pytest.param(MODELPACK, "org.cncf.model.filepath", id="cncf-modelpack-artifact"),
        pytest.param(
            DOCKER_AI, "org.opencontainers.image.title", id="docker-model-runner-artifact"
        ),
    ],
)
def test_pull_gguf_artifact_from_a_real_registry(
    vkrama, registry: str, tiny_model: Path, kind: tuple[str, str, str], title_key: str
) -> None:
    data = tiny_model.read_bytes()
    artifact_type, config_type, layer_type = kind
    repo = f"models/tiny-{layer_type.rsplit('.', 2)[-2]}"
    readme = ("text/markdown", b"# tiny\n", {"org.opencontainers.image.title": "README.md"})
    push_artifact(registry, repo, "v1",
                  [readme, (layer_type, data, {title_key: "tiny-f16.gguf"})],
                  artifact_type, config_type)  # fmt: skip
    ref = f"oci://{registry}/{repo}:v1"
    result = vkrama("pull", ref)
    assert result.returncode == 0, result.stderr
    (model,) = json.loads(vkrama("list", "--json").stdout)
    assert model["name"] == ref
    assert model["source"] == "oci"
    assert model["sha256"] == sha256(data)
    assert Path(model["path"]).name == "tiny-f16.gguf"
    assert model["metadata"]["architecture"] == "llama"
    assert model["metadata"]["quantization"] == "F16"


def test_missing_tag_is_not_found(vkrama, registry: str) -> None:
    result = vkrama("pull", f"oci://{registry}/models/absent:v9")
    assert result.returncode == ExitStatus.NOT_FOUND, result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(vkrama("list", "--json").stdout) == []


def test_artifact_without_gguf_layer_is_invalid(vkrama, registry: str) -> None:
    push_artifact(registry, "models/docs-only", "v1",
                  [("text/markdown", b"# no weights\n", {})], *MODELPACK[:2])  # fmt: skip
    result = vkrama("pull", f"oci://{registry}/models/docs-only:v1")
    assert result.returncode == ExitStatus.INVALID_MODEL, result.stderr
    assert "no GGUF layer" in result.stderr
