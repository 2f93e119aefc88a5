"""How far one stack's next-token distributions are from the CPU's over the same tokens.

Stage: bench (the output check), after `scoring` has read both sides' distributions. Pure:
lists of top-k distributions in, the measures and a verdict out; no HTTP, no clock, no
printing. The measures are those of llama.cpp's `llama-perplexity --kl-divergence`: per
token KL(reference ‖ stack), its mean and 99th percentile, and how often both name the
same most likely token.

Top-k truncation. llama-server returns each position's k most likely tokens, not the whole
vocabulary. The KL is taken over the tokens both lists name, each on its own, plus one
bucket holding all the remaining mass on each side. Both sides' masses are known exactly
for every bucket, and merging outcomes never raises a KL (the data-processing inequality),
so the figure is at most the full-vocabulary KL: truncation can hide a divergence but can
never raise a false alarm. `covered` (the reference's mass on the named tokens) says how
tight it is; with k at least the vocabulary size it is the exact KL.

Near-flat distributions. A random-weight model's distributions are close to uniform, so
its top two tokens often differ by less than the arithmetic's rounding, and the most
likely token flips between two correct stacks. Top-1 agreement is therefore judged only at
*decisive* positions, where the reference's top token leads the runner-up by more than
`DECISIVE_NATS`; the KL needs no such care (two near-uniform distributions that differ by
rounding have a KL near zero).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# A position's distribution: (token id, probability), most likely first.
Top = tuple[tuple[int, float], ...]

# Probability mass below this is the rounding of summing float32 probabilities, not mass.
ROUNDING = 1e-5
# Where a stack left no mass at all outside the shared tokens, its bucket is this small:
# finite, so one such position cannot make the mean infinite, and large in KL terms.
FLOOR = 1e-9
# The reference's top token must lead by this much (log p1 − log p2) for a position to be
# decisive. Measured (docs/output-check.md): the top tokens that the CPU at other threads,
# ubatch or flash attention, a q8_0 KV cache and lavapipe flipped on the example models
# (up to 2 of 128 positions) were none of them decisive at this margin.
DECISIVE_NATS = 0.05

# Verdict thresholds, from measurement on the example models (docs/output-check.md): the
# CPU against itself and lavapipe stayed below 3e-7 nats, a q8_0 KV cache below 3e-6, a
# q4_0 KV cache at 2e-4 to 7e-4 (95-99 % decisive top-1); other weights of the same shape
# and vocabulary gave 0.097 and 0.012 (near-flat models are close even when different) and
# 0 % decisive top-1, which is why top-1 is part of the verdict.
OK_KL_MEAN = 0.005
OK_KL_P99 = 0.05
WRONG_KL_MEAN = 0.05
# At decisive positions a stack that computes the model agrees on nearly every top token;
# one that computes something else agrees about as often as chance.
WRONG_TOP1 = 0.5
OK_TOP1 = 0.9

VERDICTS = ("ok", "drift", "wrong")


@dataclass(frozen=True)
class Divergence:
    """One stack against the reference over the same positions."""

    positions: int
    kl_mean: float
    kl_p99: float
    kl_max: float
    top1: float  # share of positions whose most likely token is the reference's
    decisive: int  # positions where the reference's top token leads by DECISIVE_NATS
    top1_decisive: float | None  # top1 over the decisive positions; None: there were none
    covered: float  # mean reference mass on the tokens both lists name (1: the KL is exact)

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "positions": self.positions,
            "kl_mean": self.kl_mean,
            "kl_p99": self.kl_p99,
            "kl_max": self.kl_max,
            "top1": self.top1,
            "decisive": self.decisive,
            "top1_decisive": self.top1_decisive,
            "covered": self.covered,
        }

    @classmethod
    def from_dict(cls, data: dict[str, float | int | None]) -> Divergence:
        def number(key: str) -> float:
            value = data[key]
            return float(value) if value is not None else math.nan

        decisive = data.get("top1_decisive")
        return cls(
            positions=int(number("positions")),
            kl_mean=number("kl_mean"),
            kl_p99=number("kl_p99"),
            kl_max=number("kl_max"),
            top1=number("top1"),
            decisive=int(number("decisive")),
            top1_decisive=None if decisive is None else float(decisive),
            covered=number("covered"),
        )


def kl(reference: Top, stack: Top) -> tuple[float, float]:
    """KL(reference ‖ stack) in nats over the shared tokens plus one bucket for the rest,
    and the reference's mass on the shared tokens."""
    theirs = dict(stack)
    shared = [(p, theirs[token]) for token, p in reference if token in theirs]
    p_rest = 1.0 - sum(p for p, _ in shared)
    q_rest = 1.0 - sum(q for _, q in shared)
    total = sum(p * math.log(p / max(q, FLOOR)) for p, q in shared if p > 0)
    if p_rest > ROUNDING:
        total += p_rest * math.log(p_rest / max(q_rest, FLOOR))
    # Rounding can leave a hair below zero where both sides agree; a KL never is.
    return max(total, 0.0), 1.0 - max(p_rest, 0.0)


def decisive(reference: Top) -> bool:
    """The reference's top token leads its runner-up by more than rounding can move."""
    if len(reference) < 2:
        return True
    (_, p1), (_, p2) = reference[0], reference[1]
    return p2 <= 0 or math.log(p1) - math.log(p2) > DECISIVE_NATS


def compare(reference: Sequence[Top], stack: Sequence[Top]) -> Divergence:
    """The measures over every position; both sides must have scored the same positions."""
    if len(reference) != len(stack) or not reference:
        raise ValueError(f"{len(reference)} reference positions against {len(stack)}")
    kls, covered, same, firm, firm_same = [], [], 0, 0, 0
    for ref, got in zip(reference, stack, strict=True):
        value, mass = kl(ref, got)
        kls.append(value)
        covered.append(mass)
        agree = bool(ref and got) and ref[0][0] == got[0][0]
        same += agree
        if decisive(ref):
            firm += 1
            firm_same += agree
    ordered = sorted(kls)
    n = len(ordered)
    return Divergence(
        positions=n,
        kl_mean=sum(kls) / n,
        kl_p99=ordered[max(0, math.ceil(0.99 * n) - 1)],  # nearest rank
        kl_max=ordered[-1],
        top1=same / n,
        decisive=firm,
        top1_decisive=firm_same / firm if firm else None,
        covered=sum(covered) / n,
    )


def verdict(found: Divergence) -> tuple[str, str]:
    """ "ok", "drift" or "wrong", and why in a few words."""
    top1 = found.top1_decisive
    said = f"KL {found.kl_mean:.3g} mean, {found.kl_p99:.3g} p99 vs CPU"
    if top1 is not None:
        said += f", top-1 {100 * top1:.0f}% of {found.decisive} decisive tokens"
    if found.kl_mean > WRONG_KL_MEAN or (top1 is not None and top1 < WRONG_TOP1):
        return "wrong", said
    flipped = top1 is not None and top1 < OK_TOP1
    if found.kl_mean > OK_KL_MEAN or found.kl_p99 > OK_KL_P99 or flipped:
        return "drift", said
    return "ok", said
