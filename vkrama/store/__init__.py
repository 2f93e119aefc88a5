"""The model store: references ─► verified GGUF files on this host (`LocalModel`).

Stage: store (model ref ─► store.resolve / store.pull ─► LocalModel). Other stages call
`pull`, `resolve` and `ensure` and read `LocalModel`; nothing here prints.
"""

from __future__ import annotations

from vkrama.store.gguf_info import GgufInfo
from vkrama.store.local_model import LocalModel
from vkrama.store.pull import corrupt_records, ensure, models, pull, remove, resolve

__all__ = [
    "GgufInfo", "LocalModel",
    "corrupt_records", "ensure", "models", "pull", "remove", "resolve",
]  # fmt: skip
