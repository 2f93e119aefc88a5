"""Prompts of a wanted length for any model: text cut where the server's tokenizer counts
the nearest length it allows to the one asked for.

Stage: bench (serving), before the load generator. `fit` is pure: a counting function and
the words to cut in, the chosen prompt out, so the search is tested on made-up tokenizers.
`build` counts with a live llama-server (`/apply-template`, then `/tokenize` the way a chat
request does). Must not print or start containers.

Why "nearest" and not "exact": a tokenizer merges across the cut, so one more character or
word can add two or three tokens at once; with some vocabularies and chat templates a given
count cannot be made at all. Every stack serving the same model gets the same text, so the
comparison stays fair; the real count is recorded with each request (`usage.prompt_tokens`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from vkrama.errors import ExitStatus, VkramaError
from vkrama.serve import api

# Words the filler prompt is drawn from: plain English, so any tokenizer splits it into
# ordinary tokens; seeded, so every stack and every run gets the same text.
FILLER_TEXT = (
    "the of and to in is was for on that with as by at from his her it an were are which "
    "this be or has had not but one all their new first time city two more other year may "
    "after school during under world river village north music local house series history"
)
FILLER_WORDS = FILLER_TEXT.split()
FILLER_SEED = 18
# Real text (the default): prose and verse the tokenizer splits as it splits what users send,
# unlike random words. Public domain; see texts/README.md.
TEXT = Path(__file__).parent / "texts" / "public-domain.txt"
SOURCES = ("text", "random")


@dataclass(frozen=True)
class Prompt:
    """One user message and the length of the whole chat prompt it makes on this server."""

    text: str
    tokens: int  # the server's count, chat template and BOS included
    wanted: int
    system: str = ""  # a system message every request shares (`--prefix-tokens`)
    prefix: int = 0  # tokens of the prompt up to and including it, as the server counts
    # A server without /tokenize (`bench --serve --url`): one word per token asked, and
    # `tokens` unknown (0); each answer's usage.prompt_tokens says what it counted.
    server_counts: bool = False

    def describe(self) -> str:
        if self.server_counts:
            return (f"prompt of {self.wanted} words (the server has no /tokenize: prompt lengths "
                    "are its own counts, per request)")  # fmt: skip
        said = f"prompt {self.tokens} tokens"
        if self.prefix:
            said += f", the first {self.prefix} shared by every request"
        if self.tokens != self.wanted:
            said += f" (asked {self.wanted}: the nearest this model's tokenizer makes)"
        return said


def filler(count: int, seed: int = FILLER_SEED) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(FILLER_WORDS) for _ in range(count)]


def text_words() -> list[str]:
    """The bundled text's words in order, its '#' header lines left out."""
    lines = TEXT.read_text(encoding="utf-8").splitlines()
    return [word for line in lines if not line.startswith("#") for word in line.split()]


def words(source: str, count: int, second: bool = False) -> list[str]:
    """`count` words to cut a prompt from: the bundled text from its start (`second`: from
    its middle, for a shared system prompt unlike the user text), read round again as often
    as a long prompt needs; or seeded random words."""
    if source == "random":
        return filler(count, FILLER_SEED + int(second))
    if source != "text":
        raise ValueError(f"prompt source must be one of {SOURCES}, not {source!r}")
    found = text_words()
    start = len(found) // 2 if second else 0
    return [found[(start + i) % len(found)] for i in range(count)]


def fit(count: Callable[[str], int], words: Sequence[str], wanted: int) -> Prompt:
    """The prefix of `words` (cut at a word, then at a character of the next word) whose
    chat prompt comes nearest to `wanted` tokens; at equal distance the shorter one.

    Counts grow with the prefix, give or take a merge at the cut, so bisection finds the
    longest word prefix within `wanted`; the characters of the next word then fill the gap
    as far as this tokenizer lets them. Fails only when one word already makes more than
    `wanted` (the template alone is too long), naming the smallest length that works.
    """
    counted: dict[str, int] = {}

    def tokens(text: str) -> int:
        if text not in counted:
            counted[text] = count(text)
        return counted[text]

    def prefix(k: int) -> str:
        return " ".join(words[:k])

    if not words:
        raise ValueError("no words to cut a prompt from")
    cuts = [words[0][:j] for j in range(1, len(words[0]))]  # a long first word, cut
    smallest = tokens(cuts[0] if cuts else prefix(1))
    if smallest > wanted:
        raise VkramaError(
            f"a prompt of {wanted} tokens cannot be made for this model: its chat template "
            f"alone makes {tokens('')} tokens, {smallest} with a one-letter message",
            hint=f"use --prompt-tokens {smallest} or more",
            status=ExitStatus.USAGE,
        )
    if tokens(prefix(1)) > wanted:
        fitting = [cut for cut in cuts if tokens(cut) <= wanted]
        best = min(fitting, key=lambda t: (abs(tokens(t) - wanted), tokens(t)))
        return Prompt(best, tokens(best), wanted)
    low, high = 1, len(words)  # tokens(prefix(low)) <= wanted; high: not known yet
    if tokens(prefix(high)) <= wanted:
        low = high
    while high - low > 1:
        middle = (low + high) // 2
        if tokens(prefix(middle)) <= wanted:
            low = middle
        else:
            high = middle
    candidates = [prefix(low), prefix(high)]
    if low < len(words):
        for cut in range(1, len(words[low])):
            text = f"{prefix(low)} {words[low][:cut]}"
            candidates.append(text)
            if tokens(text) >= wanted:
                break
    best = min(candidates, key=lambda t: (abs(tokens(t) - wanted), tokens(t)))
    return Prompt(best, tokens(best), wanted)


def build(
    url: str, headers: dict[str, str], wanted: int, prefix: int = 0, source: str = "text"
) -> Prompt:
    """The prompt cut from `source` nearest `wanted` tokens as the server at `url` counts
    them; with `prefix`, its first ~`prefix` tokens are a system message (other words) that
    every request shares, the rest a user message."""
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        system = shared = None
        if prefix:
            shared = fit(lambda text: count_chat_tokens(client, "", text),
                         words(source, 2 * prefix + 64, second=True), prefix)  # fmt: skip
            system = shared.text
        found = fit(lambda text: count_chat_tokens(client, text, system or ""),
                    words(source, 2 * wanted + 64), wanted)  # fmt: skip
    if shared is None:
        return found
    return replace(found, system=shared.text, prefix=shared.tokens)


def count_chat_tokens(client: httpx.Client, content: str, system: str = "") -> int:
    """Tokens of the prompt the server builds for one user message `content`."""
    prompt = post(client, "/apply-template", {"messages": messages(content, system)})["prompt"]
    found = post(
        client, "/tokenize", {"content": prompt, "add_special": True, "parse_special": True}
    )
    return len(found["tokens"])


def messages(content: str, system: str = "") -> list[dict[str, str]]:
    shared = [{"role": "system", "content": system}] if system else []
    return [*shared, {"role": "user", "content": content}]


def post(
    client: httpx.Client,
    path: str,
    body: dict[str, Any],
    needs: str = "the serving benchmark needs llama-server's /tokenize and /apply-template",
) -> Any:
    try:
        response = client.post(path, json=body)
    except httpx.HTTPError as error:
        raise api.unreachable(f"{path} on {client.base_url}", error) from None
    if response.status_code != 200:
        raise api.refused(
            f"{path} on {client.base_url}",
            response.status_code,
            response.text,
            hint=needs,
        )
    return response.json()
