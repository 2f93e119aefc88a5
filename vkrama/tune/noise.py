"""A configuration's score and when one beats another "beyond noise": Welch's t-test.

Stage: tune. Pure: samples in, a yes or no out. `bench`'s verdicts keep their own rule
(`results.ranking`, 2 combined standard deviations of llama-bench's rows); the search needs
one that more repetitions can satisfy, since it doubles them to separate close values.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# How a configuration that ran, but whose counter gave no figure, is refused (--for joules).
NO_FIGURE = "no tokens per joule: "


@dataclass(frozen=True)
class Score:
    """Objective samples (tokens/s), one per repetition, of one configuration."""

    samples: tuple[float, ...]
    # Seconds one repetition of it measured (llama-bench's own timing: tokens / tokens/s);
    # 0 if not known. What a trial costs beyond the container's start and the model's load.
    rep_s: float = 0.0

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)

    @property
    def stddev(self) -> float:
        return statistics.stdev(self.samples) if len(self.samples) > 1 else 0.0

    def pooled(self, other: Score | None) -> Score:
        return self if other is None else Score(other.samples + self.samples, self.rep_s)


# Student's t at 0.975 (a one-sided test at 2.5 %) by degrees of freedom: the usual table
# (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2). Between rows the smaller df's, which errs on
# the side of "within noise".
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042,
         40: 2.021, 60: 2.000, 120: 1.980}  # fmt: skip
Z_975 = 1.960  # beyond 120 degrees of freedom


def faster_beyond_noise(a: Score, b: Score) -> bool:
    """a is faster than b beyond noise: Welch's one-sided t-test at 2.5 %. The gap of the
    means must exceed t × its standard error, sqrt(sa²/na + sb²/nb), at the Welch-
    Satterthwaite degrees of freedom; with fewer than two samples on a side nothing can
    be told (False). The standard error shrinks as repetitions grow, so two close values
    that three repetitions cannot tell apart, twelve can."""
    na, nb = len(a.samples), len(b.samples)
    if na < 2 or nb < 2:
        return False
    va, vb = a.stddev**2 / na, b.stddev**2 / nb
    gap = a.mean - b.mean
    if va + vb == 0:
        return gap > 0
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return gap > t_975(df) * math.sqrt(va + vb)


def t_975(df: float) -> float:
    if df > max(T_975):
        return Z_975
    return T_975[max((d for d in T_975 if d <= df), default=1)]
