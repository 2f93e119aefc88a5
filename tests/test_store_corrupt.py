"""A store record that cannot be read is reported as corrupt, by name and path, never as
"not in the store", and `vkrama list` says it left one out instead of dropping it silently."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vkrama import config
from vkrama.errors import ExitStatus, VkramaError
from vkrama.store.blobs import Store, key_for

NAME = "ollama://library/tiny:latest"


def corrupt(home: Path, text: str) -> Path:
    refs = Store(home).root / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    path = refs / f"{key_for(NAME)}.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("{", id="cut-short-json"),
        pytest.param('{"name": "x"}', id="json-that-is-not-a-record"),
        pytest.param("[]", id="json-of-the-wrong-shape"),
    ],
)
def test_a_corrupt_record_is_an_error_that_names_it(tmp_path: Path, text: str) -> None:
    path = corrupt(tmp_path, text)
    store = Store(tmp_path)
    with pytest.raises(VkramaError) as caught:
        store.get(NAME)
    assert caught.value.status == ExitStatus.INVALID_MODEL
    assert caught.value.message.startswith(f"{NAME}: the store's record {path} is corrupt")
    assert store.models() == [] and store.corrupt_refs() == [path]
    assert store.get("ollama://library/other:latest") is None  # absent is still None


def test_list_warns_about_a_corrupt_record(vkrama: Callable[..., Any]) -> None:
    path = corrupt(config.load().home, "{")
    done = vkrama("list")
    assert done.returncode == 0
    assert f"Warning: {path} is corrupt and left out" in done.stderr
