"""The command line's one grammar for values, declared once as click types: comma lists
(`--backend cpu,vulkan`, `--depth 0,4096`, `--request-rate 1,2,inf`, ...) and durations
(`--budget 10m`, `--timeout 90s`, `--duration 500ms`), plus the check that a flag a
command would ignore is refused.

Stage: CLI (flags ─► typed values). A bad value is a `VkramaError` with a hint and the usage
status, raised while click parses, before anything starts. Nothing here reads settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import click
from click.core import ParameterSource

from vkrama import units
from vkrama.errors import ExitStatus, VkramaError


def flag(param: click.Parameter | None) -> str:
    """The flag as users know it: its long spelling (`--request-rate`)."""
    if param is None:
        return "the value"
    return max(param.opts, key=len) if param.opts else str(param.name)


class CommaList(click.ParamType):  # type: ignore[type-arg]  # generic in newer clicks only
    """`A,B,C` ─► a tuple of items, each converted by `item` (which raises ValueError with
    why). An empty list or an empty item is refused: `--request-rate ''` or `1,,2` is a
    typing slip, never "not given" or "two rates"."""

    name = "list"

    def __init__(
        self,
        item: Callable[[str], Any] = str,
        *,
        what: str = "a comma-separated list",
        example: str = "",
        unique: bool = True,
    ) -> None:
        self.item = item
        self.what = what
        self.example = example
        self.unique = unique

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value  # a default given already parsed
        name = flag(param)
        text = str(value)
        parts = [part.strip() for part in text.split(",")]
        hint = f"e.g. {name} {self.example}" if self.example else "values between commas"
        if not any(parts):
            raise VkramaError(f"{name} is empty: it takes {self.what}", hint=hint,
                              status=ExitStatus.USAGE)  # fmt: skip
        if not all(parts):
            raise VkramaError(f"{name} {text!r} has an empty item", hint=hint,
                              status=ExitStatus.USAGE)  # fmt: skip
        try:
            items = [self.item(part) for part in parts]
        except ValueError as why:
            reason = f" ({why})" if str(why) and "invalid literal" not in str(why) else ""
            raise VkramaError(f"{name} {text!r} is not {self.what}{reason}", hint=hint,
                              status=ExitStatus.USAGE) from None  # fmt: skip
        return tuple(dict.fromkeys(items)) if self.unique else tuple(items)


class Duration(click.ParamType):  # type: ignore[type-arg]  # generic in newer clicks only
    """`90s`, `10m`, `1h30m`, `500ms`, or a bare number in `bare` units ─► seconds (float),
    at least `minimum` (above it when `open`)."""

    name = "duration"

    def __init__(self, minimum: float = 0.0, *, open: bool = False, bare: str = "s") -> None:
        self.minimum = minimum
        self.open = open
        self.bare = bare

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        name = flag(param)
        found = units.seconds(str(value), name, self.bare)
        if found < self.minimum or (self.open and found == self.minimum):
            least = "more than" if self.open else "at least"
            raise VkramaError(
                f"{name} {value!r} is too short: it takes {least} {self.minimum:g} s",
                hint=f"e.g. {name} 90s or {name} 10m",
                status=ExitStatus.USAGE,
            )
        return found


def natural(least: int) -> Callable[[str], int]:
    """An item converter: a whole number ≥ `least`."""

    def convert(text: str) -> int:
        number = int(text)
        if number < least:
            raise ValueError(f"{text} is below {least}")
        return number

    return convert


def given(ctx: click.Context, name: str) -> bool:
    """Whether the user set parameter `name` (on the command line or by its variable), not
    left it at its default."""
    source = ctx.get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def refuse_ignored(
    ctx: click.Context,
    names: Iterable[str],
    needs: str,
    hints: Mapping[str, str] | None = None,
) -> None:
    """A flag among `names` that the user gave, where it means something only `needs` (e.g.
    "with --serve"), is a usage error naming both: a flag the command would ignore is never
    silently dropped. `hints` may say more for a flag than "add ... or drop ..."."""
    params = {p.name: p for p in ctx.command.params}
    for name in names:
        if given(ctx, name):
            shown = flag(params[name])
            enable = f"add {needs.removeprefix('with ')}, or " if needs.startswith("with ") else ""
            raise VkramaError(
                f"{shown} means something only {needs}",
                hint=(hints or {}).get(name) or f"{enable}drop {shown}",
                status=ExitStatus.USAGE,
            )
