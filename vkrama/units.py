"""Durations as people type them: `90s`, `10m`, `1h30m`, `500ms`, `1.5s`, or a bare number
in the unit its flag or setting documents.

Stage: shared by every stage (like errors and config): the one duration grammar of the
command line (`--budget`, `--duration`, `--timeout`) and of SLO limits (`ttft_p90=500ms`).
Pure: text in, seconds out, a usage error otherwise. Must not print or read settings.
"""

from __future__ import annotations

import re

from vkrama.errors import ExitStatus, VkramaError

UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_NUMBER = r"\d+(?:\.\d+)?|\.\d+"
_TERM = re.compile(rf"({_NUMBER})(ms|h|m|s)")  # "ms" before "m": 5ms is not 5 minutes
_WHOLE = re.compile(rf"(?:(?:{_NUMBER})(?:ms|h|m|s))+")
_BARE = re.compile(_NUMBER)


def seconds(text: str, what: str, bare: str | None = "s") -> float:
    """`text` in seconds; a bare number is in unit `bare` ("s" or "ms"), or refused where
    `bare` is None (an SLO limit: 5 could mean ms or s, and either misreading is 1000x).

    Terms add up in any order ("1m30s" is 90 s). Negative, empty, inf and nan are refused:
    a duration here is a time to wait or a limit to meet, and those are finite and ≥ 0.
    """
    value = text.strip().lower()
    if _BARE.fullmatch(value) and bare is not None:
        return float(value) * UNITS[bare]
    if _WHOLE.fullmatch(value):
        return sum(float(n) * UNITS[unit] for n, unit in _TERM.findall(value))
    raise VkramaError(
        f"{what} {text!r} is not a duration",
        hint="e.g. 90s, 10m, 1h30m or 500ms; "
        + (f"a bare number is in {_UNIT_WORDS[bare]}" if bare else "with its unit"),
        status=ExitStatus.USAGE,
    )


_UNIT_WORDS = {"s": "seconds", "ms": "milliseconds"}
