"""Image archives through podman's API: `save` (docker-archive, what `podman load` reads)
and `load`.

Stage: engine (beside `engine.images`; the only podman-py users are the engine modules).
A lost service is waited out by `Engine.call`, and a repeated attempt starts the archive
again from its first byte. Never prints: bytes written go to a `Reporter` as `Download`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vkrama.progress import NULL, Download, Reporter

if TYPE_CHECKING:
    from vkrama.engine.protocol import Engine

CHUNK = 1 << 20  # bytes per write while saving an archive


def save(
    engine: Engine,
    references: Sequence[str],
    destination: Path,
    on_progress: Reporter = NULL,
) -> None:
    """Write the images into one docker-archive tar (what `podman load` reads), reporting
    the bytes written (the total is unknown: podman streams the archive as it makes it)."""
    partial = destination.with_name(destination.name + ".partial")

    def export() -> None:
        # A repeated attempt writes the archive again from its first byte.
        response = engine.client.api.get(
            "/images/export",
            params={"references": list(references), "format": "docker-archive"},
            stream=True,
        )
        response.raise_for_status()
        with partial.open("wb") as out:
            done = 0
            for chunk in response.iter_content(CHUNK):
                out.write(chunk)
                done += len(chunk)
                on_progress(Download(destination.name, done, None))

    try:
        engine.call("save images", export)
        partial.replace(destination)  # a half-written archive never has the final name
    finally:
        partial.unlink(missing_ok=True)


def load(engine: Engine, source: Path) -> list[str]:
    """Load the images of an archive written by `save` (or `podman save`); their names."""

    def post() -> Any:
        # Loading an archive again after a lost attempt only names the same images again.
        with source.open("rb") as archive:
            response = engine.client.api.post(
                "/images/load", data=archive, headers={"Content-Type": "application/x-tar"}
            )
            response.raise_for_status()
        return response.json()

    return [str(name) for name in engine.call(f"load {source}", post).get("Names") or []]
