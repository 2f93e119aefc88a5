"""Random-weight llama GGUF files for tests, demos and benchmarks (there is no model hub here).

Stage: outside the pipeline; it produces inputs for it. Writes only the file it is asked to
write (plus `llama-quantize`'s output when quantizing, in a container run through vkrama's
engine like every other); must not print and must not touch the network. Random weights
run at the speed of real ones of the same shape, which is all a benchmark or a server
smoke test needs.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from vkrama import config
from vkrama.engine import ContainerSpec, Engine, Mount, connect

# SentencePiece-style ids llama.cpp expects for a "llama" tokenizer.
UNK, BOS, EOS = 0, 1, 2
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# A Llama-3-style header template: different markers, no system default, "\n\n" after the
# role; with the BPE vocabulary it makes a model whose prompts tokenize unlike the SPM one.
HEADERS = (
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
BPE_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>")  # fmt: skip
CPU_IMAGE = "localhost/vkrama/cpu:latest"


@dataclass(frozen=True)
class Shape:
    """The hyper-parameters of a llama-architecture model."""

    name: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    n_ctx: int
    # "llama" or "qwen2" (llama's tensors plus q/k/v biases); "spm" (SentencePiece with byte
    # tokens, ChatML) or "bpe" (GPT-2 byte-level BPE with merges, Llama-3-style headers).
    arch: str = "llama"
    vocab: str = "spm"

    @property
    def parameter_count(self) -> int:
        head_dim = self.n_embd // self.n_head
        attn = 2 * self.n_embd * self.n_embd + 2 * self.n_embd * head_dim * self.n_head_kv
        per_layer = attn + 3 * self.n_embd * self.n_ff + 2 * self.n_embd
        if self.arch == "qwen2":
            per_layer += self.n_embd + 2 * head_dim * self.n_head_kv
        return self.n_layer * per_layer + 2 * self.n_vocab * self.n_embd + self.n_embd


SHAPES: dict[str, Shape] = {
    # ~3.9 M parameters, 7.9 MB in F16: written in well under a second.
    "tiny": Shape("vkrama-tiny", 256, 4, 4, 4, 768, 1024, 2048),
    # ~0.66 B parameters: 1.3 GB in F16 (~6 s), ~0.38 GB as Q4_0 (TinyLlama-like, fewer layers).
    "bench": Shape("vkrama-bench", 2048, 12, 32, 4, 5632, 32000, 4096),
    # ~2 M parameters: another architecture, tokenizer and chat template than "tiny".
    "tiny-bpe": Shape("vkrama-tiny-bpe", 256, 2, 4, 2, 512, 2048, 2048, "qwen2", "bpe"),
}


def vocabulary(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """An SPM vocabulary: unk/bos/eos, chat markers, the 256 byte tokens, then word pieces."""
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces = _pieces(n_vocab - len(tokens))
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    # Shorter pieces first with higher scores: a plausible SPM merge order.
    scores = [0.0] * (n_vocab - len(pieces)) + [-float(i) for i in range(len(pieces))]
    return tokens, scores, [int(t) for t in types]


def byte_chars() -> list[str]:
    """GPT-2's byte-level alphabet: each byte as one printable character, in byte order
    (printable Latin-1 bytes stand for themselves, the others move to U+0100 and up)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    moved = iter(range(0x100, 0x200))
    return [chr(b) if b in kept else chr(next(moved)) for b in range(256)]


def bpe_vocabulary(n_vocab: int) -> tuple[list[str], list[int], list[str]]:
    """A byte-level BPE vocabulary: the 256 byte characters, merged letter pieces (with and
    without the leading-space mark "Ġ") each made by one merge of two earlier tokens, then
    the special tokens. (tokens, token types, merges)."""
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    space = byte_chars()[ord(" ")]
    tokens = byte_chars()
    known = set(tokens)
    merges: list[str] = []
    room = n_vocab - len(BPE_SPECIALS)
    # Breadth first: every piece one letter longer than one already made, spaced or not.
    level = [space, *letters]
    while len(tokens) < room:
        grown = []
        for left in level:
            for c in letters:
                if len(tokens) >= room:
                    break
                if left + c not in known:
                    merges.append(f"{left} {c}")
                    tokens.append(left + c)
                    known.add(left + c)
                    grown.append(left + c)
        level = grown
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)
    tokens += BPE_SPECIALS
    types += [int(gguf.TokenType.CONTROL)] * len(BPE_SPECIALS)
    return tokens, types, merges


def _pieces(count: int) -> list[str]:
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    alphabet = list(letters) + list(letters.upper()) + list("0123456789.,!?'-:;()")
    out: list[str] = ["▁"]
    out += [f"▁{c}" for c in alphabet] + alphabet
    for a in letters:
        for b in letters:
            out += [f"▁{a}{b}", f"{a}{b}"]
    for a in letters:
        for b in letters:
            for c in letters:
                out += [f"▁{a}{b}{c}", f"{a}{b}{c}"]
                if len(out) >= count:
                    return out[:count]
    # Large vocabularies (Llama 3's 128256 tokens) continue with four-letter pieces.
    for a in letters:
        for b in letters:
            for c in letters:
                for d in letters:
                    if len(out) >= count:
                        return out[:count]
                    out += [f"▁{a}{b}{c}{d}", f"{a}{b}{c}{d}"]
    if count > len(out):
        raise ValueError(f"vocabulary of {count} pieces is larger than this generator makes")
    return out[:count]


def write(
    path: Path,
    shape: Shape | str = "tiny",
    seed: int = 0,
    split_max_tensors: int = 0,
    pool_elements: int | None = None,
) -> Path:
    """Write a random-weight F16 llama GGUF to `path` (deterministic for a seed); return it.

    With `split_max_tensors`, write split files `NAME-0000i-of-0000N.gguf` and return the first.
    `pool_elements` caps the random pool (default: twice the biggest tensor); a tensor larger
    than the pool repeats it. An 8B model's 128256-token embedding would otherwise need ~1e9
    normals drawn first.
    """
    shape = SHAPES[shape] if isinstance(shape, str) else shape
    path = Path(path)
    rng = np.random.default_rng(seed)
    head_dim = shape.n_embd // shape.n_head
    n_embd_kv = head_dim * shape.n_head_kv
    biggest = max(shape.n_vocab * shape.n_embd, shape.n_ff * shape.n_embd)
    # One random pool, sliced at random offsets: drawing ~1e9 normals would take minutes.
    size = min(2 * biggest, pool_elements) if pool_elements else 2 * biggest
    pool = (rng.standard_normal(size, dtype=np.float32) * 0.02).astype(np.float16)

    def weight(rows: int, cols: int) -> np.ndarray:
        if rows * cols > pool.size:
            return np.resize(np.roll(pool, int(rng.integers(0, pool.size))), (rows, cols))
        start = int(rng.integers(0, pool.size - rows * cols + 1))
        return pool[start : start + rows * cols].reshape(rows, cols)

    def norm() -> np.ndarray:
        return np.ones(shape.n_embd, dtype=np.float32)

    writer = gguf.GGUFWriter(path, shape.arch, split_max_tensors=split_max_tensors)
    writer.add_name(shape.name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(shape.n_vocab)
    _tokenizer(writer, shape)

    writer.add_tensor("token_embd.weight", weight(shape.n_vocab, shape.n_embd))
    for i in range(shape.n_layer):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", norm())
        writer.add_tensor(f"{blk}.attn_q.weight", weight(shape.n_embd, shape.n_embd))
        writer.add_tensor(f"{blk}.attn_k.weight", weight(n_embd_kv, shape.n_embd))
        writer.add_tensor(f"{blk}.attn_v.weight", weight(n_embd_kv, shape.n_embd))
        writer.add_tensor(f"{blk}.attn_output.weight", weight(shape.n_embd, shape.n_embd))
        if shape.arch == "qwen2":
            writer.add_tensor(f"{blk}.attn_q.bias", np.zeros(shape.n_embd, dtype=np.float32))
            writer.add_tensor(f"{blk}.attn_k.bias", np.zeros(n_embd_kv, dtype=np.float32))
            writer.add_tensor(f"{blk}.attn_v.bias", np.zeros(n_embd_kv, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_norm.weight", norm())
        writer.add_tensor(f"{blk}.ffn_gate.weight", weight(shape.n_ff, shape.n_embd))
        writer.add_tensor(f"{blk}.ffn_up.weight", weight(shape.n_ff, shape.n_embd))
        writer.add_tensor(f"{blk}.ffn_down.weight", weight(shape.n_embd, shape.n_ff))
    writer.add_tensor("output_norm.weight", norm())
    writer.add_tensor("output.weight", weight(shape.n_vocab, shape.n_embd))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if split_max_tensors:
        first = sorted(path.parent.glob(f"{path.stem}-00001-of-*.gguf"))
        return first[0]
    return path


def _tokenizer(writer: gguf.GGUFWriter, shape: Shape) -> None:
    if shape.vocab == "bpe":
        tokens, types, merges = bpe_vocabulary(shape.n_vocab)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("llama-bpe")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        first = len(tokens) - len(BPE_SPECIALS)
        writer.add_bos_token_id(first)  # <|begin_of_text|>
        writer.add_eos_token_id(first + 4)  # <|eot_id|>
        writer.add_add_bos_token(True)
        writer.add_chat_template(HEADERS)
        return
    tokens, scores, spm_types = vocabulary(shape.n_vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(spm_types)
    writer.add_unk_token_id(UNK)
    writer.add_bos_token_id(BOS)
    writer.add_eos_token_id(EOS)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHATML)


def quantize(
    src: Path,
    dst: Path,
    kind: str = "q4_0",
    image: str = CPU_IMAGE,
    engine: Engine | None = None,
) -> Path:
    """Quantize `src` into `dst` with llama-quantize from the cpu image, run by vkrama's
    engine (the podman service vkrama itself finds or starts, unless one is given)."""
    src, dst = Path(src).resolve(), Path(dst).resolve()
    engine = engine or connect(config.load())
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quantize-") as work:
        spec = ContainerSpec(
            image=image,
            command=("llama-quantize", f"/in/{src.name}", f"/out/{dst.name}", kind,
                     str(os.cpu_count() or 1)),
            mounts=(Mount(src.parent, "/in"), Mount(Path(work), "/out", read_only=False)),
            network="none",  # it reads one file and writes another: no network at all
            # uid 0 in the container: the invoking user under rootless podman, and the owner
            # of the output directory under rootful podman run as root. Capabilities stay
            # dropped and no-new-privileges set (ContainerSpec's defaults).
            user="0:0",
        )  # fmt: skip
        done = engine.run_to_completion(spec)
        if done.exit_code != 0:
            raise RuntimeError(f"llama-quantize exited {done.exit_code}: {done.stderr[-2000:]}")
        os.replace(Path(work) / dst.name, dst)
    return dst


def make(kind: str, out: Path, seed: int = 0, quantize_to: str | None = None) -> Path:
    """Write the `kind` model to `out`; with `quantize_to`, write F16 next to it then quantize."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if quantize_to is None:
        return write(out, kind, seed)
    with tempfile.TemporaryDirectory(dir=out.resolve().parent, prefix=".f16-") as work:
        f16 = write(Path(work) / f"{out.stem}-f16.gguf", kind, seed)
        return quantize(f16, out, quantize_to)
