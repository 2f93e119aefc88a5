"""llama.cpp's tunable flags, one row each: the one place their spellings live.

Stage: shared facts (beside errors and config), read by bench (llama-bench's command line
and its JSON rows), results (a tuning's llama-server arguments), serve, tune (the search
space and its order) and the docs (`markdown`). Pure data: must not import anything of
vkrama's, run or print. A llama.cpp flag spelled anywhere else in the package fails
tests/test_layout.py.

Facts copied from llama.cpp (build 11669): llama-bench's `--help` and its `-o json` field
names, llama-server's `--help`. llama-server takes llama-bench's short spellings as well
(they are common arguments of both tools); vkrama writes the long ones for the server and
reads either (`aliases`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LlamaFlag:
    """One setting as each llama.cpp tool spells it."""

    name: str  # vkrama's key for it: llama-bench's flag without its dash ("ub")
    bench: str  # llama-bench's flag: "-ub"
    server: str  # llama-server's flag: "--ubatch-size"
    field: str  # the llama-bench JSON row field that reports it: "n_ubatch" ("" none)
    meaning: str  # what it sets, in the words an error or a doc uses


# In tune's search order: the settings that move a result most first, so a short budget
# spends itself where it matters (flash attention, then the batch sizes, then the KV cache).
FLAGS = (
    LlamaFlag("fa", "-fa", "--flash-attn", "flash_attn", "flash attention"),
    LlamaFlag("ub", "-ub", "--ubatch-size", "n_ubatch", "the physical batch (ubatch)"),
    LlamaFlag("b", "-b", "--batch-size", "n_batch", "the logical batch"),
    LlamaFlag("ctk", "-ctk", "--cache-type-k", "type_k", "the K cache type"),
    LlamaFlag("ctv", "-ctv", "--cache-type-v", "type_v", "the V cache type"),
    LlamaFlag("t", "-t", "--threads", "n_threads", "threads"),
    LlamaFlag("ngl", "-ngl", "--n-gpu-layers", "n_gpu_layers", "layers on the GPU"),
    LlamaFlag("ncmoe", "-ncmoe", "--n-cpu-moe", "n_cpu_moe", "MoE experts kept on the CPU"),
    LlamaFlag("sm", "-sm", "--split-mode", "split_mode", "the split mode"),
)
# Where the model runs rather than how fast: never tuned. llama-bench reports no field
# of its own for --rpc; its `gpu_info` lists the workers' addresses (bench.stderr reads it).
PLACEMENT = (LlamaFlag("rpc", "--rpc", "--rpc", "", "the ggml RPC workers (HOST:PORT,...)"),)
FLAG = {flag.name: flag for flag in (*FLAGS, *PLACEMENT)}
ORDER = tuple(flag.name for flag in FLAGS)


def aliases(key: str) -> tuple[str, str]:
    """Both spellings llama-server accepts for one flag: ("-ub", "--ubatch-size")."""
    return FLAG[key].bench, FLAG[key].server


def name(text: str) -> str | None:
    """The key of a flag the user named as `ub`, `-ub` or `--ubatch-size`; None if unknown."""
    for flag in FLAGS:
        if text in (flag.name, flag.bench, flag.server):
            return flag.name
    return None


def markdown() -> str:
    """The table docs/tuning.md carries (tests/test_docs.py checks they agree)."""
    lines = ["| llama-bench | llama-server | JSON row field | sets |", "|---|---|---|---|"]
    lines += [f"| `{f.bench}` | `{f.server}` | `{f.field}` | {f.meaning} |" for f in FLAGS]
    return "\n".join(lines)
