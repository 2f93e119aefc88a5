"""What a bench cell or a server runs on, resolved once for both: the model, the host's
hardware, the backends chosen for them, each backend's image and compile cache.

Stage: stack, after store and before results (store ─► hardware ─► backends ─► images ─►
here); `bench.session`, `serve.session` and `tune.session` call `resolve`. How the parts
are had is a `Supply`: `PLAN` is the --dry-run (reads the model store and the host, names
images; pulls, builds and creates nothing), `Fetch(engine)` pulls the model, reuses or
builds images and makes cache folders. Must not print: steps go to a `Reporter`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from vkrama.backends import compile_cache
from vkrama.config import Settings
from vkrama.errors import VkramaError
from vkrama.progress import NULL, Reporter

if TYPE_CHECKING:
    from vkrama.backends import Choice
    from vkrama.engine import Engine
    from vkrama.hardware import HardwareProfile
    from vkrama.store import LocalModel

# image ref -> (image id, provenance labels), for the images a Fetch had.
Images = dict[str, tuple[str, dict[str, str]]]


class Supply(Protocol):
    """How `resolve` gets a model, an image and a cache folder."""

    @property
    def live(self) -> bool: ...

    def model(self, settings: Settings, ref: str, on_progress: Reporter) -> LocalModel: ...

    def image(
        self, settings: Settings, choice: Choice, images: Images, on_progress: Reporter
    ) -> str: ...


class _Plan:
    """The --dry-run: what exists is read, nothing is made."""

    live = False

    def model(self, settings: Settings, ref: str, on_progress: Reporter) -> LocalModel:
        from vkrama import store

        return store.resolve(settings, ref)

    def image(
        self, settings: Settings, choice: Choice, images: Images, on_progress: Reporter
    ) -> str:
        from vkrama import images as images_stage

        return images_stage.image_ref(choice.backend)


PLAN: Supply = _Plan()


@dataclass(frozen=True)
class Fetch:
    """The real run: the model is pulled if missing, images reused or built."""

    engine: Engine
    live: bool = field(default=True, init=False)

    def model(self, settings: Settings, ref: str, on_progress: Reporter) -> LocalModel:
        from vkrama import store

        return store.ensure(settings, ref, on_progress=on_progress)

    def image(
        self, settings: Settings, choice: Choice, images: Images, on_progress: Reporter
    ) -> str:
        from vkrama import images as images_stage

        ref = images_stage.image_ref(choice.backend)
        if ref not in images:
            found = images_stage.ensure(
                self.engine, choice.backend, settings, on_progress=on_progress,
                gfx=choice.gfx_targets,
            )  # fmt: skip
            ref = found.ref
            images[ref] = (found.id, dict(found.provenance))
        elif choice.backend == "rocm":
            # rocm's one image may serve one GPU and lack another's gfx target.
            images_stage.rocm.check_targets(images[ref][1], choice.gfx_targets)
        return ref


@dataclass(frozen=True)
class Stack:
    """One chosen backend with the image and compile cache it runs with."""

    choice: Choice
    image: str
    cache: compile_cache.CompileCache | None


@dataclass(frozen=True)
class Resolution:
    model: LocalModel
    profile: HardwareProfile
    stacks: list[Stack]
    failed: list[tuple[Choice, VkramaError]]  # choices whose image could not be had, in order
    images: Images


# Which backends to run, decided from the model and the host (bench's matrix, serve's one).
Chooser = Callable[["LocalModel", "HardwareProfile"], Sequence["Choice"]]


def resolve(
    settings: Settings, ref: str, choose: Chooser, supply: Supply, on_progress: Reporter = NULL
) -> Resolution:
    """Model ─► host ─► `choose` ─► one image and cache per choice.

    A choice whose image fails joins `failed` and the rest go on; a backend (and gfx set)
    that failed once is not tried again."""
    from vkrama import hardware

    model = supply.model(settings, ref, on_progress)
    profile = hardware.detect_host(settings)
    images: Images = {}
    errors: dict[str, VkramaError] = {}
    stacks: list[Stack] = []
    failed: list[tuple[Choice, VkramaError]] = []
    for choice in choose(model, profile):
        key = f"{choice.backend} {','.join(choice.gfx_targets)}"
        try:
            if key in errors:
                raise errors[key]
            image = supply.image(settings, choice, images, on_progress)
        except VkramaError as error:
            errors[key] = error
            failed.append((choice, error))
            continue
        cache = compile_cache.for_backend(settings.home, choice.backend, choice.driver)
        if cache is not None and supply.live:
            compile_cache.ensure(cache)
        stacks.append(Stack(choice, image, cache))
    return Resolution(model, profile, stacks, failed, images)
