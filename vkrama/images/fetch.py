"""Files a build needs from outside the build container, fetched once into vkrama's cache.

Stage: images (before the engine). The rocm7 recipe's llama.cpp source and the oneapi
recipe's wheels are downloaded on the host, checked against their pinned sha256 and staged
into the build context: the build itself then needs only Debian's mirror. Must not talk to
podman or print.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import requests

from vkrama.errors import ExitStatus, VkramaError
from vkrama.store.http import reason


def cached(path: Path, sha256: str) -> bool:
    """Whether `path` is there and (where a sha256 is pinned) holds exactly that file."""
    return path.is_file() and (not sha256 or sha256_of(path) == sha256)


def download(url: str, path: Path, sha256: str, cannot: str, hint: str) -> None:
    """`url` to `path`, checked against `sha256` where one is pinned; nothing partial stays.

    `cannot` starts the network error ("cannot fetch X"), `hint` its hint; `{host}` in
    either is the server's name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.part")
    digest = hashlib.sha256()
    host = url.split("/")[2]
    try:
        with requests.get(url, stream=True, timeout=60) as response:
            response.raise_for_status()
            with partial.open("wb") as out:
                for chunk in response.iter_content(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        if sha256 and digest.hexdigest() != sha256:
            raise VkramaError(
                f"{path.name}: sha256 {digest.hexdigest()} is not the pinned {sha256}",
                hint="the file on the server changed; nothing was kept",
                status=ExitStatus.CHECKSUM,
            )
        partial.replace(path)
    except requests.RequestException as error:
        raise VkramaError(
            f"{cannot.format(host=host)} from {host}: {reason(error)}",
            hint=hint.format(host=host),
            status=ExitStatus.NETWORK,
        ) from None
    finally:
        # Whatever ended the download (an error, Ctrl-C), no partial file stays behind.
        partial.unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
