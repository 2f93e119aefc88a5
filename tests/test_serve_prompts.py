"""Prompt lengths any model can take: `prompts.fit` on made-up tokenizers and chat templates
(the live counting is end to end in test_serve_bench_e2e.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vkrama.bench.prompts import filler, fit, text_words, words
from vkrama.errors import ExitStatus, VkramaError

WORDS = filler(400)


def per_word(template: int, cost: int) -> Callable[[str], int]:
    """Every word or piece of a word costs `cost` tokens, around `template` tokens."""
    return lambda text: template + cost * len(text.split())


def merging(template: int) -> Callable[[str], int]:
    """Whole words are one token each; a cut word falls apart into one token per letter
    (what a vocabulary that knows the word but not its pieces does at the cut)."""
    known = set(WORDS)
    return lambda text: template + sum(1 if w in known else len(w) for w in text.split())


def characters(template: int) -> Callable[[str], int]:
    """One token per character, spaces included: every length can be made."""
    return lambda text: template + len(text)


@pytest.mark.parametrize(
    ("count", "wanted", "made"),
    [
        (merging(20), 128, 128),
        (characters(7), 128, 128),
        # The reported failure: 55 template tokens and three per word make 127, 130, ...
        # never 128; the nearest is taken instead of failing.
        (per_word(55, 3), 128, 127),
        (per_word(55, 3), 129, 130),
        (per_word(1, 2), 4, 3),  # a tie (3 and 5): the shorter
    ],
    ids=["whole-words-hit-it-exactly", "characters-fill-the-last-gap",
         "three-tokens-a-word-takes-the-nearest-below",
         "three-tokens-a-word-takes-the-nearest-above", "a-tie-takes-the-shorter"],
)  # fmt: skip
def test_the_prompt_is_the_nearest_length_the_tokenizer_allows(
    count: Callable[[str], int], wanted: int, made: int
) -> None:
    prompt = fit(count, WORDS, wanted)
    assert (prompt.tokens, prompt.wanted) == (made, wanted)
    assert count(prompt.text) == made
    assert WORDS[0] in prompt.text.split()[0]


def test_the_server_is_asked_a_few_dozen_counts_not_one_per_word() -> None:
    asked: list[str] = []

    def count(text: str) -> int:
        asked.append(text)
        return 40 + len(text.split())

    assert fit(count, WORDS, 300).tokens == 300
    assert len(asked) < 20 and len(set(asked)) == len(asked)


def test_a_template_longer_than_the_prompt_fails_naming_the_smallest_that_works() -> None:
    with pytest.raises(VkramaError) as caught:
        fit(per_word(126, 1), WORDS, 100)
    assert caught.value.message == (
        "a prompt of 100 tokens cannot be made for this model: its chat template alone makes "
        "126 tokens, 127 with a one-letter message"
    )
    assert caught.value.hint == "use --prompt-tokens 127 or more"
    assert caught.value.status == ExitStatus.USAGE


def test_a_first_word_longer_than_the_room_left_is_cut() -> None:
    prompt = fit(characters(10), ["Address", "Delivered"], 14)
    assert (prompt.text, prompt.tokens) == ("Addr", 14)


def test_the_bundled_text_is_read_round_again_for_long_prompts() -> None:
    text = words("text", 10)
    assert text[:4] == ["Address", "Delivered", "at", "the"]
    every = text_words()
    assert words("text", len(every) + 3)[-3:] == every[:3]
    assert words("text", 5, second=True) != text[:5]
    assert words("random", 5) == filler(5)


def test_too_few_words_take_them_all() -> None:
    assert fit(per_word(10, 1), WORDS[:5], 100).tokens == 15


def test_the_filler_is_the_same_text_every_time() -> None:
    assert filler(50) == filler(50) and filler(50)[:10] == filler(10)
