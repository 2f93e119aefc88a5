"""Measuring a server that is already running: `vkrama bench --serve --url URL`.

Stage: bench (serving), in place of a cell's container: what the server says about itself
(`/v1/models`, and `/props` where it answers), the prompt (cut by its own `/tokenize` when
it has one; otherwise a prompt of words whose lengths are the server's own counts, as each
answer's `usage.prompt_tokens` gives them), then the same levels, SLO and sweep as a cell
(`serving.measure_levels`). The server is not ours: must not start, stop or configure it,
nor print.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httpx

from vkrama import __version__
from vkrama.bench import arrivals, load, prompts
from vkrama.bench.arrivals import CannotSend
from vkrama.bench.drive import LevelRunner
from vkrama.bench.prompts import Prompt
from vkrama.bench.serving import ServeParams, failed_levels, measure_levels
from vkrama.bench.session import BenchOutcome
from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import NULL, Reporter, Step
from vkrama.results.levels import LevelStats
from vkrama.results.records import CellResult, CellStatus
from vkrama.serve import api

if TYPE_CHECKING:
    from vkrama.config import Settings

URL_BACKEND = "url"  # the backend column of a row measured at a URL: not a stack we ran


@dataclass(frozen=True)
class Server:
    """A running OpenAI-compatible server as it describes itself."""

    url: str
    alias: str  # the model name requests ask for
    facts: dict[str, str]  # url, models, and what /props said (build, slots, model path)
    slots: int | None  # its parallel slots, where /props says

    @property
    def device(self) -> str:
        """The row's device column: the URL and what the server says it is."""
        said = [self.alias]
        said += [f"{key} {self.facts[key]}" for key in ("build", "slots") if key in self.facts]
        return f"{self.url} ({', '.join(said)})"


def describe(url: str, model: str | None, timeout: float = 10.0) -> Server:
    """What the server at `url` serves (`model`: the one to ask for; default its first)."""
    with httpx.Client(base_url=url, timeout=timeout) as client:
        listed = _get(client, "/v1/models", required=True)
        ids = [str(m.get("id")) for m in (listed or {}).get("data", []) if m.get("id")]
        if not ids:
            raise VkramaError(f"{url}/v1/models lists no model",
                              hint="is it an OpenAI-compatible server with a model loaded?",
                              status=ExitStatus.USAGE)  # fmt: skip
        if model is not None and model not in ids:
            raise VkramaError(f"{url} does not serve {model!r}",
                              hint=f"it serves {', '.join(ids)} (MODEL names one of them)",
                              status=ExitStatus.USAGE)  # fmt: skip
        props = _get(client, "/props", required=False) or {}
    facts = {"url": url, "models": ",".join(ids)}
    slots = props.get("total_slots")
    for key, value in (("build", props.get("build_info")), ("slots", slots),
                       ("model_path", props.get("model_path"))):  # fmt: skip
        if value not in (None, ""):
            facts[key] = str(value)
    return Server(url, model or ids[0], facts, slots if isinstance(slots, int) else None)


def _get(client: httpx.Client, path: str, *, required: bool) -> Any:
    try:
        response = client.get(path)
    except httpx.HTTPError as error:
        raise api.unreachable(f"{path} on {client.base_url}", error) from None
    if response.status_code == 200:
        try:
            return response.json()
        except ValueError:
            pass
    if required:
        raise api.refused(f"{path} on {client.base_url}", response.status_code, response.text,
                          hint="--url takes an OpenAI-compatible server (llama-server, vkrama "
                          "serve, vLLM, ...)")  # fmt: skip
    return None


def counts_tokens(url: str) -> bool:
    """Whether the server tokenizes for us (llama-server's /apply-template and /tokenize)."""
    with httpx.Client(base_url=url, timeout=10.0) as client:
        try:
            template = client.post("/apply-template", json={"messages": prompts.messages("a")})
            tokens = client.post("/tokenize", json={"content": "a"})
        except httpx.HTTPError:
            return False
    return template.status_code == 200 and tokens.status_code == 200


def prompt_for(server: Server, params: ServeParams, counts: bool) -> Prompt:
    """The prompt as a cell's is made, where the server `counts` tokens; else one word per
    token asked, its real length left to the server's own count per request."""
    if counts:
        return prompts.build(server.url, {}, params.prompt_tokens, params.prefix_tokens,
                             params.prompt_source)  # fmt: skip
    system = " ".join(prompts.words(params.prompt_source, params.prefix_tokens, second=True))
    own = params.prompt_tokens - params.prefix_tokens
    text = " ".join(prompts.words(params.prompt_source, own))
    return Prompt(text, 0, params.prompt_tokens, system, server_counts=True)


def run_url(
    server: Server, params: ServeParams, *, timeout: float, on_progress: Reporter = NULL
) -> CellResult:
    """Every level against `server`; a failure is a failed CellResult, except a rate the
    generator cannot send (`arrivals.CannotSend`: the whole run's usage error)."""
    started = time.monotonic()
    counts = counts_tokens(server.url)
    counted = "/tokenize" if counts else "the server's usage.prompt_tokens"
    base = CellResult(backend=URL_BACKEND, driver=None, device=server.device,
                      status=CellStatus.FAILED,
                      provenance={**server.facts, "prompt_tokens_counted_by": counted})  # fmt: skip
    levels: list[LevelStats] = []
    fixed = 0
    try:
        prompt = prompt_for(server, params, counts)
        on_progress(Step(f"  {server.url}: {prompt.describe()}"))
        target = load.Target(server.url, server.alias, timeout=max(timeout, 60.0))
        slots = server.slots or params.slots
        with load.EventLoop() as loop:
            runner = LevelRunner(None, loop, target, prompt, params.gen_tokens, slots, params.slo)
            fixed = measure_levels(runner, params, server.url, on_progress, levels)
    except arrivals.CannotSend:
        raise
    except VkramaError as error:
        why = error.message
        if error.status == ExitStatus.USAGE and error.hint:
            why += f" ({error.hint})"  # what the user can change: the row says it too
        return _ended(base, started, levels, why)
    return _ended(base, started, levels, failed_levels(levels, fixed))


def _ended(base: CellResult, started: float, levels: list[LevelStats], why: str) -> CellResult:
    return replace(base, status=CellStatus.FAILED if why else CellStatus.OK, reason=why,
                   serving=tuple(levels),
                   duration_s=round(time.monotonic() - started, 3))  # fmt: skip


def execute(
    settings: Settings,
    params: ServeParams,
    model: str | None,
    *,
    save: bool = True,
    timeout: float = 600.0,
    on_progress: Reporter = NULL,
) -> BenchOutcome:
    """`bench --serve --url`: the levels against a server already running at `params.url`
    (`model`: which of its models; default its first), stored as a one-row run (nothing
    to rank `serve --backend best` by: no model file or stack of ours ran)."""
    from vkrama import results

    server = describe(params.url or "", model)
    on_progress(Step(f"measuring {server.device}"))
    run_id = None
    if save:
        info = results.RunInfo(
            host=socket.gethostname(), kernel=platform.release(), gpus=[], gpu_key="url",
            model_name=server.alias, model_sha256="", params=params.as_dict(),
            vkrama_version=__version__, model={"name": server.alias, **server.facts},
            owner=results.current_owner(os.getpid()),
        )  # fmt: skip
        run_id = results.start_run(settings, info)
    interrupted = False
    try:
        kept = [run_url(server, params, timeout=timeout, on_progress=on_progress)]
    except KeyboardInterrupt:
        interrupted, kept = True, []
    except CannotSend:
        if run_id is not None:
            results.discard_run(settings, run_id)
        raise
    if run_id is not None and kept:
        results.add_cell(settings, run_id, 0, kept[0])
    outcome = BenchOutcome(run_id, kept, interrupted, [])
    if run_id is not None:
        results.finish_run(settings, run_id, outcome.status)
    return outcome
