"""Which llama-bench settings a stack can be tuned over, and the values it accepts.

Stage: tune (after bench, before deploy). Pure: facts about the stack, the model and the
host in, a `Space` out; nothing is run or read here. Values are llama-bench's own spelling
(`-ub 256`, `-fa on`, `-ctk q8_0`), keyed by its flag without the dash.

What each stack accepts (llama.cpp build 11669):
- `-ub` is at most `-b` (llama.cpp clamps it otherwise, so such a value measures nothing new),
  and above the prompt size an ubatch changes nothing: at pp512, ub 1024 runs as ub 512.
- a quantized V cache needs flash attention on ("quantized V cache requires flash_attn to be
  enabled"); the K cache may be quantized either way.
- threads only matter on a cpu cell; layers on the GPU (`-ngl`) only when the model does not
  fit; experts kept on the CPU (`-ncmoe`) only for a MoE model on a GPU; split mode only with
  several GPUs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vkrama import llama_flags
from vkrama.backends.env_switches import is_switch

# A tuned configuration: flag (no dash) -> value, as llama-bench spells it.
Flags = Mapping[str, str]

KV_TYPES = ("f16", "q8_0", "q4_0")
FLASH_ATTN = ("auto", "on", "off")
SPLIT_MODES = ("layer", "row")
ALL_LAYERS = "99"
# llama-bench's defaults for what may be searched; `t` and `ngl` depend on the cell.
DEFAULTS = {"fa": "auto", "ub": "512", "b": "2048", "ctk": "f16", "ctv": "f16"}
SMALLEST_UBATCH = 64
SMALLEST_BATCH = 256
# Search order (the settings that move a result most first) and what each flag is for, in
# the words an error uses: llama.cpp's flag table's.
ORDER = llama_flags.ORDER
MEANING = {flag.name: flag.meaning for flag in llama_flags.FLAGS}


@dataclass(frozen=True)
class StackFacts:
    """What the space depends on: the cell, the model and what is measured (a
    `vkrama.stack.Stack` is the resolved stack itself: image, choice, caches)."""

    backend: str  # "cpu", "vulkan", "cuda", ...
    objective: str  # "pp", "tg" or "both"
    n_prompt: int
    threads: int = 1  # the cell's default: physical cores
    logical_cpus: int = 1
    gpu_count: int = 1  # GPUs the cell uses
    fits: bool | None = None  # does the model fit the GPU's memory; None: not known
    n_layer: int | None = None  # from the GGUF header
    expert_count: int = 0  # from the GGUF header: 0 for a dense model


@dataclass(frozen=True)
class Space:
    """Candidate values per flag; `values` applies the rules that tie flags together."""

    defaults: dict[str, str]
    candidates: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def flags(self) -> tuple[str, ...]:
        # llama.cpp's flags in their order, then the stack's own switches (tune.switches)
        return (*(f for f in ORDER if f in self.candidates),
                *(f for f in self.candidates if f not in ORDER))  # fmt: skip

    def values(self, flag: str, current: Flags) -> tuple[str, ...]:
        """The values of `flag` to try with the rest of `current` held; always includes
        `current`'s own value, first."""
        allowed = [v for v in self.candidates.get(flag, ()) if refusal(flag, v, current) is None]
        own = current[flag]
        return (own, *[v for v in allowed if v != own])


def refusal(flag: str, value: str, current: Flags) -> str | None:
    """Why `value` for `flag` cannot run with the rest of `current`, or None."""
    if flag == "ctv" and value != "f16" and current.get("fa") != "on":
        return "a quantized V cache needs flash attention on (-fa on)"
    if flag == "ub" and int(value) > int(current.get("b", DEFAULTS["b"])):
        return f"{_spelt('ub')} {value} is above {_spelt('b')} {current.get('b')}"
    if flag == "b" and int(value) < int(current.get("ub", DEFAULTS["ub"])):
        return f"{_spelt('b')} {value} is below {_spelt('ub')} {current.get('ub')}"
    if flag == "fa" and value != "on" and current.get("ctv", "f16") != "f16":
        return "a quantized V cache needs flash attention on (-fa on)"
    return None


def together(configs: Sequence[Flags]) -> list[list[int]]:
    """Which configurations share a llama-bench process: all of them when they differ in
    one flag at most (a comma list), else one process each (llama-bench would cross two
    lists into configurations nobody asked for)."""
    varied = [f for f in configs[0] if len({c[f] for c in configs}) > 1]
    # A switch is the container's environment: one process runs with one value of it.
    shared = len(varied) <= 1 and not any(is_switch(f) for f in varied)
    return [list(range(len(configs)))] if shared else [[i] for i in range(len(configs))]


def _spelt(key: str) -> str:
    return llama_flags.FLAG[key].bench


def space(stack: StackFacts, only: tuple[str, ...] = ()) -> Space:
    """The flags worth searching on `stack` (restricted to `only` when given)."""
    cpu = stack.backend == "cpu"
    defaults = dict(DEFAULTS)
    candidates: dict[str, tuple[str, ...]] = {"fa": FLASH_ATTN}
    if stack.objective != "tg":  # one token per step: the batch sizes cannot matter to tg
        top = _power_at_least(max(stack.n_prompt, 1))
        candidates["ub"] = _powers(SMALLEST_UBATCH, min(top, 4096))
        # A batch above the prompt changes nothing either; the default stays a candidate.
        batches = (*_powers(SMALLEST_BATCH, top), DEFAULTS["b"])
        candidates["b"] = tuple(sorted(set(batches), key=int))
    candidates["ctk"] = KV_TYPES
    candidates["ctv"] = KV_TYPES
    if cpu:
        defaults["t"] = str(stack.threads)
        counts = {1, max(stack.threads // 2, 1), stack.threads, stack.logical_cpus}
        candidates["t"] = tuple(str(n) for n in sorted(counts))
    else:
        defaults["ngl"] = ALL_LAYERS
        layers = stack.n_layer or 0
        if stack.fits is False and layers:
            candidates["ngl"] = tuple(
                str(n) for n in dict.fromkeys([layers, layers * 3 // 4, layers // 2, layers // 4])
            )
        if stack.expert_count and layers:
            defaults["ncmoe"] = "0"
            candidates["ncmoe"] = tuple(
                str(n) for n in dict.fromkeys([0, layers // 4, layers // 2, layers])
            )
        if stack.gpu_count > 1:
            defaults["sm"] = "layer"
            candidates["sm"] = SPLIT_MODES
    if only:
        candidates = {f: v for f, v in candidates.items() if f in only}
    return Space(defaults, candidates)


def unsearchable(stack: StackFacts, flag: str) -> str | None:
    """Why `flag` cannot be tuned on `stack` (for a `--flags` the user named), or None."""
    if flag not in ORDER:
        return f"{flag} is not a setting vkrama tunes"
    if flag in space(stack).candidates:
        return None
    why = {
        "t": "threads are tuned on cpu cells only",
        "ngl": "layers are tuned only on a GPU cell whose model does not fit",
        "ncmoe": "experts on the CPU are tuned only for a MoE model on a GPU",
        "sm": "the split mode is tuned only across several GPUs",
        "ub": f"{MEANING['ub']} cannot change tg (one token per step): tune for pp or both",
        "b": f"{MEANING['b']} cannot change tg (one token per step): tune for pp or both",
    }
    return why.get(flag, f"{flag} is not tuned on {stack.backend}")


def _powers(low: int, high: int) -> tuple[str, ...]:
    found, n = [], low
    while n <= high:
        found.append(str(n))
        n *= 2
    return tuple(found)


def _power_at_least(n: int) -> int:
    power = 1
    while power < n:
        power *= 2
    return power
