"""Warm a llama-server that answers before it is called ready: run it once at the batch
sizes it will serve, so that the first real chat does not pay for compiling GPU code.

Stage: serve, after `ready.wait_ready` and before `session.launch` returns. ggml's Vulkan
backend builds each pipeline the first time a shape needs it, and NVIDIA's driver compiles
on first use too: on an H200 the first chat after ready took 9.8 s for 19 prompt tokens
(issue 26). llama-server's own start-up run decodes two tokens. Kernels are picked by how
many tokens a batch holds (ggml's Vulkan backend: vector kernels up to 8, then small,
medium and large matrix tiles), so the warm-up runs a short chat on every slot (its
template, one token generated at a time) and prompts of 16, 48 and a whole ubatch of
tokens. The pipelines so built land in the mounted compile cache (backends.compile_cache)
and outlive the container. Speaks HTTP only; never prints, never imports podman-py.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests

from vkrama.llama_flags import aliases
from vkrama.serve import api

# llama-server's defaults for -ub and -b (`llama-server --help`, build 11669).
DEFAULT_UBATCH = 512
DEFAULT_BATCH = 2048
CHAT_TOKENS = 2  # the second is generated alone: the decode shape of every chat
# A warm-up prompt leaves this much of a slot's context free (the generated token, BOS).
CONTEXT_SPARE = 16
# llama-server flags that make a server of embeddings or scores, which takes no chats.
EMBEDDING_FLAGS = frozenset({"--embedding", "--embeddings", "--reranking", "--rerank"})
# Prompt sizes besides the ubatch: one in each of the smaller kernel classes above.
PROMPT_SIZES = (16, 48)
# Repeated until a prompt is long enough; any text the tokenizer reads will do.
FILLER = "The quick brown fox jumps over the lazy dog while warming up. "


def compiles_on_first_use(backend: str) -> bool:
    """Whether a server of `backend` compiles or loads GPU code at its first requests, and
    so is warmed with a whole ubatch too.

    Every GPU stack does (Vulkan pipelines, CUDA's lazily loaded and JIT-compiled kernels,
    ROCm's code objects, SYCL's JIT). cpu runs code compiled into the image; what it pays
    at first use (a slot's first request, see `warm_up`) the short chats and small prompts
    cover. A whole ubatch on cpu would cost its compute (a 7B model on 16 cores: ~7 s) to
    compile nothing."""
    return backend != "cpu"


@dataclass(frozen=True)
class Warmed:
    """What the warm-up ran; `skipped` says why a step did not run ("" when all did)."""

    seconds: float
    prompts: tuple[int, ...] = ()  # each prompt's tokens as the server counted them
    skipped: str = ""

    @property
    def text(self) -> str:
        """ "short chats and prompts of 16, 48 and 512 tokens", for a progress line."""
        sizes = [str(n) for n in self.prompts]
        listed = ", ".join(sizes[:-1]) + f" and {sizes[-1]}" if len(sizes) > 1 else "".join(sizes)
        return f"short chats and prompts of {listed} tokens" if sizes else "short chats"


def batch_sizes(command: Sequence[str]) -> tuple[int, int]:
    """(ubatch, batch) from llama-server's argv: the last -ub/-b given, else its defaults."""
    ubatch, batch = DEFAULT_UBATCH, DEFAULT_BATCH
    for flag, value in itertools.pairwise(command):
        if flag in aliases("ub") and value.isdigit():
            ubatch = int(value)
        elif flag in aliases("b") and value.isdigit():
            batch = int(value)
    return ubatch, batch


def warm_up(
    url: str,
    command: Sequence[str],
    timeout: float,
    api_key: str | None = None,
    whole_ubatch: bool = True,
) -> Warmed:
    """A short chat on each slot, then prompts of `PROMPT_SIZES` and (`whole_ubatch`) of
    one ubatch of tokens, none longer than a slot's context holds.

    No request keeps its prompt for reuse (`cache_prompt: false`): a first chat must find
    no prefix of the warm-up to skip. A server of embeddings is not warmed, and a request
    the server refuses ends the warm-up: `skipped` says why, the server answers, only not
    warm. A request that gets no answer at all raises: the server is gone."""
    started = time.monotonic()
    ubatch, batch = batch_sizes(command)
    pooled = sorted(EMBEDDING_FLAGS.intersection(command))
    if pooled:
        # llama-server 11669 with --embedding exits on a chat request (seen here).
        return Warmed(0.0, (), f"{pooled[0]}: the server answers no chats to warm it with")
    with requests.Session() as session:
        if api_key:
            session.headers["Authorization"] = f"Bearer {api_key}"

        def post(path: str, body: dict[str, Any]) -> dict[str, Any] | str:
            """The answer's JSON, or why the server refused."""
            what = f"warm-up request to {url}{path}"
            try:
                answer = session.post(f"{url}{path}", json=body, timeout=timeout)
            except requests.RequestException as error:
                raise api.unreachable(what, error) from None
            if answer.status_code != 200:
                return api.refused(what, answer.status_code, answer.text).message
            try:
                found = answer.json()
            except ValueError:
                found = None
            return found if isinstance(found, dict) else f"{what}: not a JSON object"

        def skipped(why: str, prompts: Sequence[int] = ()) -> Warmed:
            return Warmed(time.monotonic() - started, tuple(prompts), why)

        props = _get(session, f"{url}/props", timeout)
        chat = {"messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": CHAT_TOKENS, "cache_prompt": False}  # fmt: skip
        # One chat per slot: a slot's first request cost the first chat here too (a chat
        # after warm-ups that had left one slot unused took 4.7x the next, cpu, tiny).
        for slot in range(max(int(props.get("total_slots") or 1), 1)):
            said = post("/v1/chat/completions", {**chat, "id_slot": slot} if props else chat)
            if isinstance(said, str):
                return skipped(said)
        n_ctx = int((props.get("default_generation_settings") or {}).get("n_ctx") or 0)
        room = max(n_ctx - CONTEXT_SPARE, 1) if n_ctx else ubatch
        wanted = (*PROMPT_SIZES, min(ubatch, batch)) if whole_ubatch else PROMPT_SIZES
        sizes = sorted({min(size, room) for size in wanted})
        tokens = post("/tokenize", {"content": FILLER})
        ids = tokens.get("tokens") if isinstance(tokens, dict) else None
        if not isinstance(ids, list) or not ids:
            return skipped(tokens if isinstance(tokens, str) else "the server tokenized nothing")
        counted: list[int] = []
        for size in sizes:
            prompt = (ids * (size // len(ids) + 1))[:size]
            done = post("/completion", {"prompt": prompt, "n_predict": 1, "cache_prompt": False})
            if isinstance(done, str):
                return skipped(done, counted)
            counted.append(int((done.get("timings") or {}).get("prompt_n") or size))
    return Warmed(time.monotonic() - started, tuple(counted))


def _get(session: requests.Session, url: str, timeout: float) -> dict[str, Any]:
    """A GET's JSON object; {} when the server does not say (an older build, an error)."""
    try:
        answer = session.get(url, timeout=timeout)
        found = answer.json() if answer.status_code == 200 else {}
    except requests.RequestException as error:
        raise api.unreachable(f"warm-up request to {url}", error) from None
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
