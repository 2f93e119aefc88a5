"""Each stack's own environment switches as dimensions of its search space.

Stage: tune. Pure: a `Space`, the backend's switches (`backends.env_switches`) and the names
its image's libraries read (`images.library`) in, a wider `Space` out. A switch is a
dimension like a flag: its values are unset ("") and each of its `values`; a trial runs
with the set ones in its container's environment, and each row carries them beside its
llama-bench flags. Only switches the image's library reads are offered; one the user names
(`--flags`) that it does not read is refused with why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from vkrama.backends.env_switches import BY_NAME, EnvSwitch, is_switch, of_backend
from vkrama.results.records import CellResult
from vkrama.tune.space import Flags, Space

UNSET = ""  # the switch's variable is not set: ggml's own default


def offered(
    backend: str, read: frozenset[str] | None, only: Sequence[str] = ()
) -> tuple[EnvSwitch, ...]:
    """The backend's switches its image reads (all of the table's when `read` is None: a
    dry run, where the image is not run), restricted to `only` when it names any flag."""
    found = [s for s in of_backend(backend) if read is None or s.name in read]
    return tuple(s for s in found if not only or s.name in only)


def refusal(backend: str, name: str, read: frozenset[str] | None, image: str) -> str | None:
    """Why the switch `name` (named with --flags) cannot be tuned on `backend`, or None."""
    switch = BY_NAME.get(name)
    if switch is None:
        return f"{name} is not an environment switch vkrama tunes"
    if switch.backend != backend:
        return f"{name} is read by {switch.backend}'s ggml, not {backend}'s"
    if read is not None and name not in read:
        return f"{name} is not in the libraries of {image}: its ggml does not read it"
    return None


def elsewhere(name: str, backend: str, backends: set[str]) -> bool:
    """Whether switch `name` belongs to another of the tune's stacks than `backend`:
    `--flags GGML_CUDA_FORCE_MMQ` over cuda and vulkan searches it on cuda alone."""
    switch = BY_NAME.get(name)
    return switch is not None and switch.backend != backend and switch.backend in backends


def widen(space: Space, switches: Sequence[EnvSwitch]) -> Space:
    """`space` with each switch as one more dimension, unset by default."""
    defaults = {**space.defaults, **{s.name: UNSET for s in switches}}
    candidates = {**space.candidates, **{s.name: (UNSET, *s.values) for s in switches}}
    return Space(defaults, candidates)


def spelt(key: str, value: str) -> str:
    """How a row or a line says one setting: "-ub 256", "GGML_VK_DISABLE_F16=1"."""
    return f"{key}={value}" if is_switch(key) else f"-{key} {value}"


def names(space: Space, backend: str, read: frozenset[str] | None) -> list[str]:
    """What --flags can name on a stack: its llama.cpp flags, then its own switches."""
    return [*space.flags, *(s.name for s in offered(backend, read))]


def carried(result: CellResult, config: Flags) -> CellResult:
    """`result` whose rows carry the switches they ran with beside their llama-bench flags
    ("" for unset): what `results show` lists and what the search matches rows by."""
    env = {key: value for key, value in config.items() if is_switch(key)}
    rows = tuple(replace(m, flags={**m.flags, **env}) for m in result.measurements)
    return replace(result, measurements=rows)
