"""OCI registries: `oci://REGISTRY/REPO:TAG` holding GGUF layers (ModelPack, Docker model-runner).

Stage: store source (ModelRef ─► RemoteFile). Speaks the OCI distribution API: manifest (an
index is followed to its first manifest), then the GGUF layers' blobs by digest. Handles the
bearer-token flow (and Basic) with credentials from the usual auth files; TLS everywhere but
on loopback and `models.insecure_registries` hosts that do not speak it. Ollama's registry
speaks the same API, so `ollama.py` reuses `Registry`. Credentials and tokens go into request
headers only: must never be printed or stored. Must not print.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from vkrama.errors import ExitStatus, VkramaError
from vkrama.store import names
from vkrama.store.http import Http, json_of
from vkrama.store.refs import ModelRef
from vkrama.store.transfer import RemoteFile

MANIFESTS = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
INDEXES = ("application/vnd.oci.image.index.v1+json",
           "application/vnd.docker.distribution.manifest.list.v2+json")  # fmt: skip
# CNCF ModelPack weights, Docker model-runner GGUF.
GGUF_LAYERS = (
    "application/vnd.cncf.model.weight.v1.raw",
    "application/vnd.cncf.model.weight.v1.gguf",
    "application/vnd.docker.ai.gguf.v3",
)
TITLE_KEYS = ("org.cncf.model.filepath", "org.opencontainers.image.title")
REGISTRY_HINT = "check the registry's address: it must speak the OCI distribution API"
LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$")


def base_url(host: str, http: Http) -> str:
    """https://HOST, or http://HOST for a host that may (loopback or listed in
    models.insecure_registries) and does not speak TLS: docker and podman try the same way."""
    if (LOOPBACK.match(host) or host in http.insecure) and not http.speaks_tls(
        f"https://{host}/v2/"
    ):
        return f"http://{host}"
    return f"https://{host}"


@dataclass(frozen=True)
class Credential:
    basic: str = field(repr=False)  # base64 "user:password": never shown
    file: str  # the auth file it came from (shown in hints)


class Registry:
    """One repository on one registry, authenticated on first 401."""

    def __init__(self, http: Http, base: str, repo: str, environ: Mapping[str, str]) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.repo = repo
        self.environ = environ
        self.auth: dict[str, str] = {}
        self.credential: Credential | None = None

    def get(self, path: str, accept: str, what: str) -> dict[str, Any]:
        url = f"{self.base}/v2/{self.repo}/{path}"
        headers = {"Accept": accept}
        response = self.http.request("GET", url, {**headers, **self.auth}, what=what, ok=(401,))
        if response.status_code == 401:
            response.close()
            self._authenticate(response.headers.get("WWW-Authenticate", ""), what)
            response = self.http.request("GET", url, {**headers, **self.auth}, what=what,
                                         ok=(401,))  # fmt: skip
            if response.status_code == 401:
                response.close()
                raise self._refused(what)
        return json_of(response, dict, f"{what}: {self.host}'s answer", REGISTRY_HINT)

    @property
    def host(self) -> str:
        return urlsplit(self.base).netloc

    def manifest(self, tag: str) -> dict[str, Any]:
        what = f"{self.repo}:{tag}"
        manifest = self.get(f"manifests/{tag}", MANIFESTS, what)
        if manifest.get("mediaType") in INDEXES or "manifests" in manifest:
            entries = manifest.get("manifests") or []
            if not entries:
                raise VkramaError(f"{what}: the index lists no manifest",
                                  status=ExitStatus.INVALID_MODEL)  # fmt: skip
            first = entries[0] if isinstance(entries, list) and entries else {}
            digest = first.get("digest") if isinstance(first, dict) else None
            names.digest(digest, f"{self.host}'s index for {what}")
            manifest = self.get(f"manifests/{digest}", MANIFESTS, what)
        return manifest

    def blob(self, digest: object, filename: str, size: object) -> RemoteFile:
        """A layer to fetch, its digest checked: it names the partial file and the blob."""
        hexdigest = names.digest(digest, f"{self.host}'s manifest for {self.repo}")
        return RemoteFile(
            names.file_name(filename, f"{self.host}'s manifest for {self.repo}"),
            f"{self.base}/v2/{self.repo}/blobs/sha256:{hexdigest}", sha256=hexdigest,
            size=size if isinstance(size, int) and size >= 0 else None, headers=self.auth,
        )  # fmt: skip

    def _authenticate(self, challenge: str, what: str) -> None:
        scheme, _, params = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        self.credential = credentials(self.environ, self.host)
        basic = {"Authorization": f"Basic {self.credential.basic}"} if self.credential else {}
        if scheme.lower() == "bearer" and "realm" in fields:
            query = {k: v for k, v in fields.items() if k in ("service", "scope")}
            query.setdefault("scope", f"repository:{self.repo}:pull")
            url = f"{fields['realm']}?{urlencode(query)}"
            answer = self.http.request("GET", url, basic, what=f"{what} token", ok=(401, 403))
            if answer.status_code in (401, 403):
                answer.close()
                raise self._refused(what)
            body = json_of(answer, dict, f"{what}: the token service's answer", REGISTRY_HINT)
            found = body.get("token") or body.get("access_token")
            if not found:
                raise VkramaError(f"{what}: the registry's token service gave no token",
                                  status=ExitStatus.AUTH)  # fmt: skip
            self.auth = {"Authorization": f"Bearer {found}"}
        elif scheme.lower() == "basic" and basic:
            self.auth = basic
        else:
            raise self._refused(what)

    def _refused(self, what: str) -> VkramaError:
        credential = self.credential
        if credential is None:
            looked = ", ".join(auth_files(self.environ))
            return VkramaError(
                f"{what}: {self.host} wants credentials (HTTP 401) and vkrama has none for it",
                hint=f"`podman login {self.host}` (or `docker login`) stores them; vkrama reads"
                f" {looked}",
                status=ExitStatus.AUTH,
            )
        return VkramaError(
            f"{what}: {self.host} refused the credentials from {credential.file} (HTTP 401)",
            hint=f"log in again: `podman login {self.host}`",
            status=ExitStatus.AUTH,
        )


def auth_files(environ: Mapping[str, str]) -> list[str]:
    """Where credentials are looked up, in order: as podman, skopeo and docker do."""
    home = Path(environ.get("HOME") or Path.home())
    files = [environ.get("REGISTRY_AUTH_FILE", "")]
    if environ.get("XDG_RUNTIME_DIR"):
        files.append(f"{environ['XDG_RUNTIME_DIR']}/containers/auth.json")
    files += [str(home / ".config/containers/auth.json"), str(home / ".docker/config.json")]
    return [f for f in files if f]


def credentials(environ: Mapping[str, str], host: str) -> Credential | None:
    """The "user:password" (base64) for `host` from the first auth file that has it."""
    for name in auth_files(environ):
        try:
            auths = json.loads(Path(name).read_text()).get("auths", {})
        except (OSError, ValueError, AttributeError):
            continue
        for key, entry in auths.items():
            if urlsplit(key if "://" in key else f"//{key}").netloc != host:
                continue
            if entry.get("auth"):
                return Credential(str(entry["auth"]), name)
            if entry.get("username"):
                raw = f"{entry['username']}:{entry.get('password', '')}".encode()
                return Credential(base64.b64encode(raw).decode(), name)
    return None


def gguf_layers(manifest: dict[str, Any], media_types: tuple[str, ...]) -> list[dict[str, Any]]:
    layers = []
    found = manifest.get("layers")
    for layer in found if isinstance(found, list) else []:
        if not isinstance(layer, dict) or layer.get("mediaType") not in media_types:
            continue
        title = _title(layer)
        # ModelPack raw weights may be safetensors too: keep only what is named GGUF, if named.
        if title and not title.endswith(".gguf"):
            continue
        layers.append(layer)
    return layers


def _title(layer: dict[str, Any]) -> str:
    annotations = layer.get("annotations")
    if not isinstance(annotations, dict):
        return ""
    for key in TITLE_KEYS:
        if annotations.get(key):
            # A ModelPack file path is relative to the model; the store keeps its last part.
            path = names.repo_path(annotations[key], f"a layer's {key} annotation")
            return path.rsplit("/", 1)[-1]
    return ""


def remote_files(
    ref: ModelRef, http: Http, environ: Mapping[str, str]
) -> tuple[list[RemoteFile], str]:
    registry = Registry(http, base_url(ref.host, http), ref.repo, environ)
    manifest = registry.manifest(ref.tag)
    layers = gguf_layers(manifest, GGUF_LAYERS)
    if not layers:
        raise VkramaError(
            f"{ref.name} has no GGUF layer",
            hint="vkrama reads ModelPack (application/vnd.cncf.model.weight.v1.*) and Docker"
            " model-runner (application/vnd.docker.ai.gguf.v3) artifacts",
            status=ExitStatus.INVALID_MODEL,
        )
    files = []
    for index, layer in enumerate(layers):
        default = f"{ref.repo.rsplit('/', 1)[-1]}-{index + 1}.gguf"
        name = _title(layer) or default
        files.append(registry.blob(layer.get("digest"), name, layer.get("size")))
    return files, f"{registry.base}/{ref.repo}:{ref.tag}"
