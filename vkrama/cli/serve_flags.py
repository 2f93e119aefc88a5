"""The serving bench's flags (`vkrama bench --serve`), declared once and handed to the
command as one `ServeParams` (or None without --serve).

Stage: CLI (flags ─► typed values). Parses and cross-checks only; a contradiction between
flags is a usage error here, before anything starts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import click

from vkrama.bench import slo
from vkrama.bench.arrivals import ARRIVALS, parse_rates
from vkrama.bench.prompts import SOURCES
from vkrama.bench.serving import ServeParams
from vkrama.cli.types import CommaList, Duration, natural, refuse_ignored
from vkrama.errors import ExitStatus, VkramaError

# Each rate through the one rate parser, so a list item is judged as a whole list is.
RATES = CommaList(lambda text: parse_rates(text)[0], what="a list of positive rates",
                  example="0.5,1,2 (requests/s; inf: all at once)")  # fmt: skip
LEVELS = CommaList(natural(1), what="a list of positive numbers", example="1,4,16")
SLO_TERMS = CommaList(what="a list of targets", example="ttft_p90=500ms,itl_p90=50ms",
                      unique=False)  # fmt: skip

OPTIONS = [
    click.option(
        "--serve",
        "serve_mode",
        is_flag=True,
        help="Serving benchmark: llama-server as `vkrama serve` starts it, under concurrent "
        "streaming chat requests (TTFT, inter-token latency, throughput).",
    ),
    click.option(
        "--concurrency",
        type=LEVELS,
        metavar="C1,C2",
        help="--serve: closed-loop levels, clients at once (default 1,4 unless --request-rate).",
    ),
    click.option(
        "--request-rate",
        "request_rate",
        type=RATES,
        metavar="R1,R2",
        help="--serve: open-loop levels, requests/s whatever the server does (inf: all at once).",
    ),
    click.option(
        "--arrival",
        type=click.Choice(ARRIVALS),
        default="poisson",
        show_default=True,
        help="--serve: how --request-rate spaces requests.",
    ),
    click.option(
        "--duration",
        type=Duration(0, open=True),
        metavar="TIME",
        help="--serve: time per level instead of --requests, e.g. 30s or 2m (a bare number "
        "is seconds).",
    ),
    click.option(
        "--parallel",
        type=click.IntRange(min=1),
        metavar="N",
        help="--serve: llama-server slots (default: the largest --concurrency, else 4).",
    ),
    click.option(
        "--slo",
        "slo_text",
        type=SLO_TERMS,
        metavar="FIG_pQ=LIMIT,...",
        help="--serve: latency targets a level must meet, e.g. ttft_p90=500ms,itl_p90=50ms "
        "(limits in the duration syntax, with a unit).",
    ),
    click.option(
        "--sweep",
        is_flag=True,
        help="--serve: after the --request-rate levels (default: one at 1/s), raise the rate "
        "until --slo breaks; reports the highest rate each stack sustains (capacity).",
    ),
    click.option(
        "--prompt-tokens",
        type=click.IntRange(min=1),
        default=128,
        show_default=True,
        metavar="N",
        help="--serve: prompt length, counted by the server's tokenizer.",
    ),
    click.option(
        "--prompt-source",
        type=click.Choice(SOURCES),
        default="text",
        show_default=True,
        help="--serve: prompts cut from a bundled public-domain text, or random words.",
    ),
    click.option(
        "--prefix-tokens",
        type=click.IntRange(min=0),
        default=0,
        metavar="P",
        help="--serve: the first ~P prompt tokens are a system prompt every request shares; "
        "each level is measured with llama-server's prompt cache off, then on.",
    ),
    click.option(
        "--gen-tokens",
        type=click.IntRange(min=2),
        default=64,
        show_default=True,
        metavar="M",
        help="--serve: tokens generated per request.",
    ),
    click.option(
        "--requests",
        type=click.IntRange(min=1),
        metavar="K",
        help="--serve: requests per level (default: 4 per client or 4 s at the rate, at least 16).",
    ),
    click.option(
        "--url",
        metavar="URL",
        help="--serve: measure the OpenAI-compatible server already running at URL "
        "(vkrama serve, llama-server, another tool's) instead of starting one; MODEL, if "
        "given, names which of its models.",
    ),
]
NAMES = ("serve_mode", "concurrency", "request_rate", "arrival", "duration", "parallel",
         "slo_text", "sweep", "prompt_tokens", "prefix_tokens", "prompt_source",
         "gen_tokens", "requests", "url")  # fmt: skip


def serving_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options above on `command`, which receives them as `serve=ServeParams | None`."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in NAMES}
        serve_mode = given.pop("serve_mode")
        if not serve_mode:  # each would be ignored by llama-bench
            refuse_ignored(click.get_current_context(), given, "with --serve")
        kwargs["serve"] = serve_params(**given) if serve_mode else None
        return command(*args, **kwargs)

    for option in reversed(OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def serve_params(
    concurrency: tuple[int, ...] | None,
    request_rate: tuple[float, ...] | None,
    arrival: str,
    duration: float | None,
    parallel: int | None,
    slo_text: tuple[str, ...] | None,
    sweep: bool,
    prompt_tokens: int,
    prefix_tokens: int,
    prompt_source: str,
    gen_tokens: int,
    requests: int | None,
    url: str | None = None,
) -> ServeParams:
    """The serving bench's flags as one ServeParams; contradictions are usage errors."""
    rates = request_rate or ()
    levels: tuple[int, ...] = () if rates or sweep else (1, 4)
    if concurrency is not None:
        levels = concurrency
    if duration is not None and requests is not None:
        raise VkramaError("--duration and --requests both end a level: pass one",
                          hint="--duration 30s (time per level) or --requests 16",
                          status=ExitStatus.USAGE)  # fmt: skip
    if sweep and not slo_text:
        raise VkramaError("--sweep raises the rate until the SLO breaks: it needs --slo",
                          hint="e.g. --sweep --slo ttft_p90=500ms,itl_p90=50ms",
                          status=ExitStatus.USAGE)  # fmt: skip
    if sweep and any(math.isinf(r) for r in rates[:1]):
        raise VkramaError("--sweep starts at --request-rate's first rate: not inf",
                          hint="start at a finite rate, e.g. --sweep --request-rate 1",
                          status=ExitStatus.USAGE)  # fmt: skip
    if duration is not None and any(math.isinf(r) for r in rates):
        raise VkramaError("a burst (--request-rate inf) sends everything at once: it takes "
                          "--requests, not --duration",
                          hint="e.g. --request-rate inf --requests 32",
                          status=ExitStatus.USAGE)  # fmt: skip
    if prefix_tokens >= prompt_tokens:
        raise VkramaError(f"--prefix-tokens {prefix_tokens} leaves no room in a prompt of "
                          f"{prompt_tokens} tokens for each request's own text",
                          hint="a shared prefix shorter than --prompt-tokens",
                          status=ExitStatus.USAGE)  # fmt: skip
    if url is not None and not url.startswith(("http://", "https://")):
        raise VkramaError(f"--url {url!r} is not an http:// or https:// address",
                          hint="e.g. --url http://127.0.0.1:8080",
                          status=ExitStatus.USAGE)  # fmt: skip
    if url is not None and parallel is not None:
        raise VkramaError("--parallel sets the slots of a server vkrama starts; the server at "
                          "--url has its own", hint="drop --parallel",
                          status=ExitStatus.USAGE)  # fmt: skip
    objectives = slo.parse(",".join(slo_text)) if slo_text else ()
    return ServeParams(levels, prompt_tokens, gen_tokens, requests, rates, arrival, duration,
                       parallel, objectives, sweep, prefix_tokens, prompt_source,
                       url.rstrip("/") if url else None)  # fmt: skip
