"""The model store: references ─► verified GGUF files on this host (`LocalModel`).

Stage: store (model ref ─► store.resolve / store.pull ─► LocalModel). Other stages call
`pull`, `resolve` and `ensure` and read `LocalModel`; nothing here prints.

Modules: `pull` (pull, resolve, ensure, list, remove: the entry points), `refs` (model
references), `sources` (hf, oci, ollama, url: a reference's files), `http` (the session,
its retries and the failures' wording), `transfer` (one stream's body into a file and its
sha256), `splice` (that body moved by the kernel), `download` (one file fetched, resumed,
verified), `ranges` (a large file as several range streams), `blobs` (the store on disk),
`names` (names checked before they reach the disk), `hf_cache` (the Hugging Face cache),
`file_index` (what is known of files outside the store), `gguf_info` (what a GGUF file
says about itself), `local_model` (`LocalModel`). This file only re-exports.
"""

from __future__ import annotations

from vkrama.store.gguf_info import GgufInfo
from vkrama.store.local_model import LocalModel
from vkrama.store.pull import corrupt_records, ensure, models, pull, remove, resolve

__all__ = [
    "GgufInfo", "LocalModel",
    "corrupt_records", "ensure", "models", "pull", "remove", "resolve",
]  # fmt: skip
