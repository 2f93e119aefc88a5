"""Flags that several commands share, declared once: which backend and GPUs, how a model is
split over them, and llama-server's knobs (`serve`, `run`, `bench`, `devices`).

Stage: CLI (flags ─► typed values). Each parser turns text into the type the request
wants or raises click's usage error; nothing here reads settings or touches the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from vkrama.cli.types import CommaList, Duration

# --gpu and --tensor-split are comma lists too: empty ones and empty items are refused by
# the one list type before their own parsers read the words (all, each) and numbers.
_GPUS = CommaList(unique=False, what="GPU indices", example="0,1 (or all)")
_SHARES = CommaList(unique=False, what="a list of proportions", example="3,1")

BACKEND_CHOICES = ("auto", "cpu", "vulkan", "rocm", "cuda", "oneapi", "best")
GPU_HELP = "GPU index, or a list 0,1 / all to split the model over several (see `vkrama devices`)."
BENCH_GPU_HELP = (
    "GPU index; a list 0,1 or all: the model split over them; each: every GPU alone "
    "and then the split, in one run (what the second GPU buys)."
)
SPLIT_MODE_HELP = "How a model is split over several GPUs (llama.cpp --split-mode; default layer)."
TENSOR_SPLIT_HELP = (
    "Share of the model per GPU, in --gpu's order, e.g. 3,1 (default: by each GPU's memory "
    "where the driver tells it, else llama.cpp's split by free memory)."
)

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def port_type(value: str) -> int | str:
    """--port: a number in 1..65535, or "auto"."""
    if value == "auto":
        return value
    if value.isdigit() and 0 < int(value) < 65536:
        return int(value)
    raise click.BadParameter(f"{value!r} is not a port (1-65535) or 'auto'")


def _rpc_worker(text: str) -> str:
    """One HOST:PORT of --rpc, as `serve.rpc` parses it (the host must resolve: the one
    look-up a flag here makes, so that a typo is a usage error before anything starts)."""
    from vkrama.serve import rpc

    return str(rpc.parse_endpoint(text))


def rpc_option(help_text: str) -> Decorator:
    """--rpc HOST:PORT,...: ggml RPC workers, one parser for serve and bench."""
    return click.option(
        "--rpc", "rpc_workers", metavar="HOST:PORT,...", default=(),
        type=CommaList(_rpc_worker, what="RPC worker addresses", example="127.0.0.1:50052"),
        help=help_text,
    )  # fmt: skip


def gpu_type(
    allow_each: bool = False,
) -> Callable[[click.Context, click.Parameter, str | None], object]:
    """--gpu: N, a list N,M (one model split over them, in that order), all (bench: each)."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
        from vkrama.backends import parse_gpus

        if value is not None:
            _GPUS.convert(value, param, ctx)
        return parse_gpus(value, allow_each=allow_each)

    return parse


def tensor_split_type(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    from vkrama.backends import check_split

    if value is not None:
        _SHARES.convert(value.replace("/", ","), param, ctx)
    return check_split(None, value)[1]


def group(*decorators: Decorator) -> Decorator:
    """Several click decorators as one, applied in the order written (top to bottom)."""

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def gpu_flags(*, bench: bool = False) -> Decorator:
    """--gpu, --split-mode and --tensor-split: the GPUs and how one model is split over them.
    `bench` also takes `--gpu each` (every GPU alone, then the split)."""
    return group(
        click.option("--gpu", metavar="N|N,M|all|each" if bench else "N|N,M|all",
                     callback=gpu_type(allow_each=bench),
                     help=BENCH_GPU_HELP if bench else GPU_HELP),
        click.option("--split-mode", type=click.Choice(("layer", "row", "none")),
                     help=SPLIT_MODE_HELP),
        click.option("--tensor-split", metavar="W1,W2", callback=tensor_split_type,
                     help=TENSOR_SPLIT_HELP),
    )  # fmt: skip


# Flags shared by `serve` and `run`: which backend and device, and llama-server's knobs.
serve_flags = group(
    click.option("--backend", type=click.Choice(BACKEND_CHOICES), default=None,
                 help="Backend image to serve with (default: settings serve.backend)."),
    gpu_flags(),
    click.option("--vk-driver", metavar="D",
                 help="Vulkan driver: radv, anv, nvk, nvidia or lavapipe."),
    click.option("--ctx-size", type=click.IntRange(min=1), metavar="N",
                 help="Context size in tokens (default: the model's)."),
    click.option("--ngl", type=click.IntRange(min=0), metavar="N",
                 help="Layers to offload (default: all on a GPU backend, 0 on cpu)."),
    click.option("--timeout", type=Duration(0, open=True), metavar="TIME",
                 help="Time to wait until ready, e.g. 5m (a bare number is seconds; "
                 "default: settings serve.timeout)."),
)  # fmt: skip
