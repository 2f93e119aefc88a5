"""A ready llama-server's next-token distributions over a fixed text, teacher-forced.

Stage: bench (the output check), against a server `check` started. Speaks HTTP only; must
not print, start containers or log the API key.

Why this way. Debian's llama.cpp ships no `llama-perplexity`, and llama-server (build
11669) returns probabilities only for the tokens it generates, never for the prompt's own.
So every scored position is one `/completion` of the text's first tokens with `n_predict`
1 and `n_probs` k: the server's answer carries the k most likely next tokens with their
probabilities before any sampler (`post_sampling_probs` off: a softmax over the whole
vocabulary, whatever the sampling settings). The prompts are token ids, the same ids on
every stack, so each stack is scored on exactly the reference's tokens, never on its own
output. The first request sends `context` tokens at once (the batched path a prompt takes,
ubatch by ubatch); each later one adds one token, and the server's prompt cache (one slot,
`cache_prompt`) keeps the rest, so a position costs one token's decode and the KV cache
every later position reads was written by the batched path. The token the server then
generates is forced by `logit_bias` (a sampler step, after the probabilities are taken).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx

from vkrama.bench import prompts
from vkrama.bench.divergence import Top
from vkrama.errors import ExitStatus, VkramaError

NEEDS = "the output check needs llama-server's /tokenize and /completion with n_probs"


def text() -> str:
    """The bundled public-domain text, its '#' header lines left out."""
    lines = prompts.TEXT.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.startswith("#")).strip()


def tokenize(url: str, headers: dict[str, str], content: str, special: bool = True) -> list[int]:
    """The text as this server's tokenizer splits it, BOS included where the model adds one."""
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        found = _post(client, "/tokenize", {"content": content, "add_special": special})
    return [int(t) for t in found["tokens"]]


def distributions(
    url: str,
    headers: dict[str, str],
    tokens: list[int],
    context: int,
    positions: int,
    top_k: int,
    on_position: Callable[[int], None] | None = None,
) -> list[Top]:
    """The distribution of the token after tokens[:context + i], for i < positions."""
    found: list[Top] = []
    # The one token generated is forced to plain ASCII: llama-server withholds a token that
    # ends inside a UTF-8 character, and its probabilities with it (seen with byte tokens).
    # The bias acts in the sampler; the probabilities returned are the model's, before it.
    plain = tokenize(url, headers, "a", special=False)[-1]
    with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
        for i in range(positions):
            body = {
                "prompt": tokens[: context + i],
                "n_predict": 1,
                "n_probs": top_k,
                "post_sampling_probs": False,
                "cache_prompt": True,
                "temperature": 0,
                "logit_bias": [[plain, 1000.0]],
            }
            answer = _post(client, "/completion", body)
            found.append(_top(answer))
            if on_position is not None:
                on_position(i + 1)
    return found


def _top(answer: dict[str, Any]) -> Top:
    try:
        listed = answer["completion_probabilities"][0]["top_logprobs"]
        return tuple((int(e["id"]), math.exp(float(e["logprob"]))) for e in listed)
    except (KeyError, IndexError, TypeError, ValueError):
        raise VkramaError(
            "llama-server answered /completion without per-token probabilities",
            hint="the output check needs llama-server's n_probs (llama.cpp build 4000 or later)",
            status=ExitStatus.BENCH_FAILED,
        ) from None


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> Any:
    return prompts.post(client, path, body, NEEDS)
