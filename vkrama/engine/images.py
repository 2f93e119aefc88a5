"""Images through podman's API: streamed builds, inspect, list, remove, one file read.

Saving and loading archives is `engine.archives`.

Stage: engine (with `engine.client`, the only importers of podman-py). Speaks podman's
REST API and turns its failures into `VkramaError`s; knows nothing of backends, recipes
or provenance, and never prints (build output goes to a `Reporter` as `BuildProgress`).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import secrets
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from vkrama.engine.spec import LAUNCH_LABEL, ContainerSpec
from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import NULL, BuildProgress, Reporter

if TYPE_CHECKING:
    from vkrama.engine.protocol import Engine

# buildah's step header, "STEP 3/11: RUN apt-get ...": every line after it belongs to it.
_STEP = re.compile(r"^STEP (\d+)/(\d+): ")


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    size: int  # bytes, as podman reports it (uncompressed layers)
    created: datetime | None
    labels: dict[str, str]


class BuildOutput:
    """Turns the build stream's `{"stream": …}` chunks into whole lines.

    Chunks split lines anywhere and apt/dpkg redraw progress with a bare `\\r`; a line
    is what the terminal would finally show.
    """

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, text: str) -> list[str]:
        *lines, self._pending = (self._pending + text).split("\n")
        return [shown for line in lines if (shown := _last_redraw(line))]

    def flush(self) -> list[str]:
        rest, self._pending = _last_redraw(self._pending), ""
        return [rest] if rest else []


def build(
    engine: Engine,
    context: Path | bytes,
    containerfile: str,
    *,
    tags: Sequence[str] = (),
    build_args: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    no_cache: bool = False,
    on_progress: Reporter = NULL,
    what: str = "",
) -> str:
    """Build an image, reporting each output line as it arrives; its id.

    Each line is a `BuildProgress` named `what` (the caller's name for the image), with
    the step it belongs to (0/0 before the first).

    `context` is a directory (sent as a tar) or a ready tar archive. Raises
    BUILD_FAILED with podman's own reason when a step fails.
    """
    with contextlib.ExitStack() as stack:
        if isinstance(context, bytes):
            body: bytes | IO[bytes] = context
        else:
            # Spooled through a file, not memory: a staged context holds ~800 MB of wheels.
            body = stack.enter_context(tempfile.TemporaryFile())
            _tar_directory(context, body)
            body.seek(0)
        return _build(
            engine, body, containerfile, tags, build_args, labels, no_cache, on_progress, what
        )


def _build(
    engine: Engine,
    body: bytes | IO[bytes],
    containerfile: str,
    tags: Sequence[str],
    build_args: dict[str, str] | None,
    labels: dict[str, str] | None,
    no_cache: bool,
    on_progress: Reporter,
    what: str,
) -> str:
    params: dict[str, Any] = {
        "dockerfile": containerfile,
        "t": list(tags),
        "buildargs": json.dumps(build_args or {}),
        "labels": json.dumps(labels or {}),
        "nocache": no_cache,
        "rm": True,
        "forcerm": True,
    }
    last: list[str] = []
    step = [0, 0]

    def emit(lines: Iterable[str]) -> None:
        for line in lines:
            last[:] = [*last[-4:], line]
            if match := _STEP.match(line):
                step[:] = [int(match.group(1)), int(match.group(2))]
            on_progress(BuildProgress(what, step[0], step[1], line))

    def attempt() -> str | None:
        if not isinstance(body, bytes):
            body.seek(0)  # a repeated attempt sends the context from its start
        output = BuildOutput()
        image_id: str | None = None
        # The Docker-compatible endpoint: podman 4.3's libpod /build never reuses cached
        # layers (podman-py issue #528), so every rebuild would run apt again.
        response = engine.client.api.post(
            "/build",
            params=params,
            data=body,
            headers={"Content-Type": "application/x-tar"},
            stream=True,
            compatible=True,
        )
        response.raise_for_status()
        for raw in response.iter_lines():
            if not raw:
                continue
            event = json.loads(raw)
            if "error" in event:
                emit(output.flush())
                reason = " ".join(str(event["error"]).split())
                raise VkramaError(
                    f"build failed: {reason}",
                    hint="the build output above shows the failing step's own messages",
                    status=ExitStatus.BUILD_FAILED,
                )
            aux = event.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = str(aux["ID"]).removeprefix("sha256:")
            emit(output.feed(str(event.get("stream", ""))))
        emit(output.flush())
        return image_id

    def restarted() -> None:
        # podman keeps the cut step's buildah containers (seen with podman 4.3): they cannot
        # be told from those of a build beside this one, so they are named, not removed.
        emit(["(podman's service came back: the build starts again from its cached layers; "
              "the cut step may have left containers, see `podman ps --external`)"])  # fmt: skip

    # A build cut off by a lost service is sent again, whole: the build was podman's and
    # ended with its service, and the endpoint above resumes from the layers it cached, so
    # only the unfinished step runs again (one that had finished comes back with its id).
    image_id = engine.call(f"build {containerfile}", attempt, again=restarted)
    if image_id is None:
        raise VkramaError(
            "build failed: podman's build stream ended without an image id",
            hint=f"last lines: {' / '.join(last) or '(none)'}",
            status=ExitStatus.BUILD_FAILED,
        )
    return image_id


def inspect(engine: Engine, reference: str) -> ImageInfo | None:
    """The local image `reference` names, or None when there is none."""

    def get() -> Any:
        response = engine.client.api.get(f"/images/{reference}/json")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    found = engine.call(f"inspect image {reference}", get)
    return None if found is None else _info(found)


def list_images(engine: Engine, reference: str) -> list[ImageInfo]:
    """Local images whose name matches `reference` (a pattern such as `localhost/vkrama/*`)."""

    def get() -> Any:
        response = engine.client.api.get(
            "/images/json", params={"filters": json.dumps({"reference": [reference]})}
        )
        response.raise_for_status()
        return response.json()

    return [_info(item) for item in engine.call("list images", get)]


def remove(engine: Engine, reference: str) -> bool:
    """Remove one image name (the image itself goes with its last name); False if absent."""
    lost: list[bool] = []

    def delete() -> bool:
        response = engine.client.api.delete(f"/images/{reference}")
        if response.status_code == 404:
            # After a lost attempt the service may have removed it before it went: the
            # name is gone all the same, as asked.
            return bool(lost)
        if response.status_code == 409:
            raise VkramaError(
                f"image {reference} is in use by a container",
                hint="stop and remove its containers first (`vkrama ps`, `vkrama stop`)",
                status=ExitStatus.ERROR,
            )
        response.raise_for_status()
        return True

    return engine.call(f"remove image {reference}", delete, again=lambda: lost.append(True))


def read_file(engine: Engine, image: str, path: str) -> bytes:
    """One file's bytes from an image, read through a created (never started) container."""
    # Created by `engine.create` with a launch label of its own: a create the lost service
    # may have half done is cleared by that label before it is sent again.
    spec = ContainerSpec(image, ("true",), labels={LAUNCH_LABEL: secrets.token_hex(8)},
                         network="none")  # fmt: skip
    container = engine.create(spec)

    def get() -> bytes:
        archive = engine.client.api.get(f"/containers/{container}/archive", params={"path": path})
        archive.raise_for_status()
        return bytes(archive.content)

    try:
        content = engine.call(f"read {path} from {image[:19]}", get)
    finally:
        engine.remove(container)
    with tarfile.open(fileobj=io.BytesIO(content)) as tar:
        member = next((m for m in tar.getmembers() if m.isfile()), None)
        handle = tar.extractfile(member) if member is not None else None
        if handle is None:
            raise VkramaError(f"{path} is not a file in {image[:19]}", status=ExitStatus.NOT_FOUND)
        return handle.read()


def _tar_directory(directory: Path, out: IO[bytes]) -> None:
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path in sorted(directory.iterdir()):
            if path.is_file():
                tar.add(path, arcname=path.name)


def _info(data: dict[str, Any]) -> ImageInfo:
    return ImageInfo(
        id=str(data.get("Id", "")).removeprefix("sha256:"),
        tags=tuple(data.get("RepoTags") or ()),
        size=int(data.get("Size") or 0),
        created=_created(data.get("Created")),
        labels=dict(data.get("Labels") or (data.get("Config") or {}).get("Labels") or {}),
    )


def _created(value: Any) -> datetime | None:
    """`/images/json` gives epoch seconds, `/images/{name}/json` RFC 3339 with nanoseconds."""
    if isinstance(value, (int, float)) and value > 0:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, str) and value:
        match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value)
        if match:
            zone = "+00:00" if match.group(3) == "Z" else match.group(3)
            return datetime.fromisoformat(match.group(1) + zone)
    return None


def _last_redraw(line: str) -> str:
    return line.rstrip("\r").rsplit("\r", 1)[-1].rstrip()
