"""Ollama's registry: `ollama://NAME[:TAG]` (namespace `library`, tag `latest` by default).

Stage: store source (ModelRef ─► RemoteFile). The registry (`models.ollama_registry`) speaks
the OCI distribution API; the model is the layer `application/vnd.ollama.image.model`, a GGUF
verified by its digest. Must not print.
"""

from __future__ import annotations

from vkrama.config import Settings
from vkrama.errors import ExitStatus, VkramaError
from vkrama.store.http import Http
from vkrama.store.refs import ModelRef
from vkrama.store.sources import oci
from vkrama.store.transfer import RemoteFile

MODEL_LAYER = "application/vnd.ollama.image.model"


def remote_files(settings: Settings, ref: ModelRef, http: Http) -> tuple[list[RemoteFile], str]:
    base = oci.base_url(ref.host, http) if ref.host else str(settings["models.ollama_registry"])
    registry = oci.Registry(http, base, ref.repo, settings.environ)
    layers = oci.gguf_layers(registry.manifest(ref.tag), (MODEL_LAYER,))
    if not layers:
        raise VkramaError(
            f"{ref.name} has no model layer ({MODEL_LAYER})",
            status=ExitStatus.INVALID_MODEL,
        )
    model = ref.repo.rsplit("/", 1)[-1]
    tag = ref.tag.replace(":", "-")
    files = [
        registry.blob(layer.get("digest"), f"{model}-{tag}.gguf", layer.get("size"))
        for layer in layers[:1]  # one model layer; others (adapters, projectors) are not run
    ]
    return files, f"{registry.base}/{ref.repo}:{ref.tag}"
