"""The output check's measures, on distributions whose KL is worked out by hand.

Each expected KL below is written as the arithmetic a reader can redo (natural logs), never
computed by the function under test.
"""

from __future__ import annotations

import math

import pytest

from vkrama.bench import divergence
from vkrama.bench.divergence import Divergence, compare, kl, verdict


@pytest.mark.parametrize(
    ("reference", "stack", "expected"),
    [
        pytest.param(
            ((1, 0.5), (2, 0.5)), ((1, 0.5), (2, 0.5)), 0.0, id="same-distribution-is-zero"
        ),
        pytest.param(
            ((1, 0.5), (2, 0.5)),
            ((2, 0.75), (1, 0.25)),
            0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75),
            id="whole-vocabulary-is-the-exact-kl",
        ),
        pytest.param(
            # Top-2 of a larger vocabulary: tokens 1 and 2 named by both, the rest (0.2 on
            # the reference's side, 0.3 on the stack's) is one bucket.
            ((1, 0.6), (2, 0.2)),
            ((1, 0.5), (2, 0.2)),
            0.6 * math.log(0.6 / 0.5) + 0.2 * math.log(1.0) + 0.2 * math.log(0.2 / 0.3),
            id="truncated-lists-add-a-remainder-bucket",
        ),
        pytest.param(
            # Token 3 is in the reference's top-2 but not the stack's: it joins the bucket.
            ((1, 0.5), (3, 0.3)),
            ((1, 0.4), (2, 0.35)),
            0.5 * math.log(0.5 / 0.4) + 0.5 * math.log(0.5 / 0.6),
            id="a-token-only-one-side-names-joins-the-bucket",
        ),
    ],
)
def test_kl_over_shared_tokens_and_one_bucket(
    reference: divergence.Top, stack: divergence.Top, expected: float
) -> None:
    assert kl(reference, stack)[0] == pytest.approx(expected, abs=1e-12)


def test_truncated_kl_never_exceeds_the_full_one() -> None:
    """The data-processing inequality, on one example: the full distributions over four
    tokens, then both cut to their top two."""
    p = {1: 0.4, 2: 0.3, 3: 0.2, 4: 0.1}
    q = {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}
    full = sum(p[t] * math.log(p[t] / q[t]) for t in p)  # 0.456 nats
    top2 = ((1, 0.4), (2, 0.3)), ((4, 0.4), (3, 0.3))
    assert kl(*top2)[0] <= full
    assert kl(*top2)[0] == 0.0  # no token shared: the bound says nothing, top-1 must


def test_mean_p99_and_top1_over_positions() -> None:
    same = ((7, 0.9), (8, 0.1))
    flipped = ((8, 0.9), (7, 0.1))
    # 99 identical positions and one flipped: KL(0.9,0.1 ‖ 0.1,0.9) = 0.8 ln 9.
    found = compare([same] * 100, [same] * 99 + [flipped])
    assert found.kl_mean == pytest.approx(0.8 * math.log(9) / 100)
    assert found.kl_p99 == 0.0  # nearest rank: the 99th of 100 sorted values
    assert found.kl_max == pytest.approx(0.8 * math.log(9))
    assert found.top1 == pytest.approx(0.99)
    assert found.decisive == 100
    assert found.top1_decisive == pytest.approx(0.99)


def test_near_ties_do_not_count_against_top1() -> None:
    """A random-weight model's top two tokens can differ by less than rounding: a flip
    there is not a disagreement that judges a stack."""
    tie = ((1, 0.3001), (2, 0.2999))
    flipped = ((2, 0.3001), (1, 0.2999))
    found = compare([tie] * 10, [flipped] * 10)
    assert found.top1 == 0.0
    assert found.decisive == 0 and found.top1_decisive is None
    assert verdict(found)[0] == "ok"  # KL of swapping 0.3001 and 0.2999 is ~1e-7


def _judged(kl_mean: float, kl_p99: float, top1: float | None) -> str:
    found = Divergence(100, kl_mean, kl_p99, kl_p99, top1 or 0.0, 50, top1, 1.0)
    return verdict(found)[0]


@pytest.mark.parametrize(
    ("kl_mean", "kl_p99", "top1", "expected"),
    [
        pytest.param(1e-5, 1e-4, 1.0, "ok", id="rounding-noise-is-ok"),
        pytest.param(0.01, 0.03, 1.0, "drift", id="beyond-noise-mean-is-drift"),
        pytest.param(1e-4, 0.2, 1.0, "drift", id="a-heavy-tail-is-drift"),
        pytest.param(1e-4, 1e-3, 0.8, "drift", id="some-flipped-decisive-tokens-is-drift"),
        pytest.param(0.5, 1.0, 1.0, "wrong", id="a-large-mean-kl-is-wrong"),
        pytest.param(1e-3, 1e-2, 0.1, "wrong", id="chance-top1-is-wrong"),
        pytest.param(1e-5, 1e-4, None, "ok", id="no-decisive-tokens-judged-by-kl"),
    ],
)
def test_verdict(kl_mean: float, kl_p99: float, top1: float | None, expected: str) -> None:
    assert _judged(kl_mean, kl_p99, top1) == expected


def test_divergence_round_trips_as_stored() -> None:
    found = compare([((1, 0.6), (2, 0.4))], [((1, 0.5), (2, 0.5))])
    assert Divergence.from_dict(found.as_dict()) == found
