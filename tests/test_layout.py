"""The folder listing is the pipeline: each stage in its room, imports running down it,
no god modules, and nothing a test or demo needs (gguf, numpy) in the runtime."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vkrama"

# The pipeline, first to last, as ../shared/STYLE.md states it ("Where things live"):
# errors/config/progress → hardware → engine → store → backends → images → results → serve
# → bench → deploy → cli. A module may import its own stage and the ones before it, never
# one after it. hardware is pure (files in, data out) and needs no engine; the engine is
# the podman service every later stage is handed; the store hands backends, images and the
# rest a LocalModel; results comes before serve and bench: bench writes its records
# (results/records.py, results/levels.py) and `serve --backend best` reads them. doctor,
# a room STYLE.md does not list, checks the host (podman, CDI, ulimits): it reads the
# hardware, the engine and the backends' list, and only the CLI reads it.
STAGES = [
    "errors config progress",  # shared by all, the flags/env/toml ─► Settings stage
    "hardware",
    "engine",
    "store",
    "backends",
    "doctor",
    "images",
    "stack",  # model + host + choices + images, resolved once for bench, serve and tune
    "results",
    "serve",
    "bench",
    "tune",  # each stack's best flags, searched by bench's cells; serve reads them from results
    "deploy",
    "cli __main__",
]
RANK = {name: rank for rank, names in enumerate(STAGES) for name in names.split()}
LONG = 300


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def stage(module: str) -> str:
    """`vkrama.serve.plan` -> "serve"; the package itself (__version__) is shared."""
    parts = module.split(".")
    # `vkrama` itself and `from vkrama import __version__` are shared, like errors.
    return parts[1] if len(parts) > 1 and parts[1] in RANK else "errors"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def vkrama_imports(path: Path) -> set[str]:
    """Every vkrama module `path` imports, at the top, lazily or for type checking."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vkrama")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vkrama"):
            module = node.module or ""
            found |= {f"{module}.{a.name}" if module == "vkrama" else module for a in node.names}
    return found


def test_every_stage_is_a_room_of_the_package() -> None:
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    rooms |= {p.stem for p in PACKAGE.glob("*.py")}
    assert rooms - {"__init__"} <= set(RANK), "a new room: add it to STAGES (and STYLE.md)"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_pipeline(path: Path) -> None:
    importer = stage(module_name(path))
    upward = sorted(name for name in vkrama_imports(path) if RANK[stage(name)] > RANK[importer])
    assert upward == [], f"{importer} must not import later stages"


@pytest.mark.parametrize(
    "path",
    [p for p in modules() if p.name == "__init__.py" and p.parent != PACKAGE],
    ids=lambda p: p.parent.name,
)
def test_each_package_docstring_names_its_stage(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert path.parent.name in doc.lower() and "stage" in doc.lower()


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_over_300_lines_says_why_at_its_top(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if text.count("\n") <= LONG:
        return
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert f"Over {LONG} lines because" in doc


def test_the_runtime_imports_neither_gguf_nor_numpy() -> None:
    """They are the test fixture's (examples/examplemodel.py); `pip install .` lacks them."""
    script = (
        "import sys, pkgutil, importlib\n"
        "sys.modules['gguf'] = None; sys.modules['numpy'] = None\n"
        "import vkrama\n"
        "for m in pkgutil.walk_packages(vkrama.__path__, 'vkrama.'):\n"
        "    if m.name != 'vkrama.__main__':  # it runs the CLI\n"
        "        importlib.import_module(m.name)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_gguf_and_numpy_are_not_runtime_dependencies() -> None:
    import tomllib

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split(";")[0].strip() for d in project["dependencies"]}
    assert not names & {"gguf", "numpy"}


def test_local_model_has_a_module_of_its_own_and_the_store_hands_it_out() -> None:
    # blobs.py is the disk layout; the type every later stage reads is not its business.
    from vkrama import store
    from vkrama.store import blobs, local_model

    assert store.LocalModel is local_model.LocalModel
    assert store.LocalModel.__module__ == "vkrama.store.local_model"
    assert "class LocalModel" not in Path(blobs.__file__).read_text(encoding="utf-8")
