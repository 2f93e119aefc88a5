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
    # shared by all: the flags/env/toml ─► Settings stage, llama.cpp's flag table and the
    # duration grammar
    "errors config progress llama_flags units",
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


def modules(package: Path = PACKAGE) -> list[Path]:
    return sorted(package.rglob("*.py"))


def stage(module: str) -> str:
    """`vkrama.serve.plan` -> "serve"; the package itself (__version__) is shared."""
    parts = module.split(".")
    # `vkrama` itself and `from vkrama import __version__` are shared, like errors.
    return parts[1] if len(parts) > 1 and parts[1] in RANK else "errors"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
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


def upward(path: Path, package: Path = PACKAGE) -> list[str]:
    """The vkrama modules `path` imports from stages after its own."""
    importer = stage(module_name(path, package))
    return sorted(name for name in vkrama_imports(path) if RANK[stage(name)] > RANK[importer])


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module ─► the modules of the package it imports (at the top, lazily or for type
    checking: a cycle held apart by a lazy import is still a cycle). `from p import x` is
    an edge to the module p.x where there is one, else to p (x is one of p's names)."""
    paths = {module_name(path, package): path for path in modules(package)}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package this module is in
                    parent = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([base] if base else [])])
                found |= {
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base
                    for alias in node.names
                }
        graph[name] = {target for target in found if target in paths and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each group of modules that import each other, directly or round a longer loop
    (the strongly connected components of more than one module, Tarjan's walk)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def logic(init: Path) -> list[str]:
    """What an `__init__.py` holds beyond a docstring, imports and `__all__`, by line;
    the top package may also say its `__version__` (the build reads it there)."""
    allowed = {"__all__", "__version__"} if init.parent.name == PACKAGE.name else {"__all__"}
    tree = ast.parse(init.read_text(encoding="utf-8"))
    extra = []
    for number, node in enumerate(tree.body):
        if number == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else []
        if len(targets) == 1 and isinstance(targets[0], ast.Name) and targets[0].id in allowed:
            continue
        extra.append(f"line {node.lineno}: {type(node).__name__}")
    return extra


def test_every_stage_is_a_room_of_the_package() -> None:
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    rooms |= {p.stem for p in PACKAGE.glob("*.py")}
    assert rooms - {"__init__"} <= set(RANK), "a new room: add it to STAGES (and STYLE.md)"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_pipeline(path: Path) -> None:
    assert upward(path) == [], f"{stage(module_name(path))} must not import later stages"


@pytest.mark.parametrize(
    "path",
    [p for p in modules() if p.name == "__init__.py" and p.parent != PACKAGE],
    ids=lambda p: p.parent.name,
)
def test_each_package_docstring_names_its_stage(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert path.parent.name in doc.lower() and "stage" in doc.lower()


@pytest.mark.parametrize(
    "path",
    [p for p in modules() if p.name == "__init__.py" and p.parent != PACKAGE],
    ids=lambda p: str(p.parent.relative_to(PACKAGE)),
)
def test_each_package_docstring_lists_its_modules(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    rooms = [p.stem for p in path.parent.glob("*.py") if p.name != "__init__.py"]
    rooms += [p.name for p in path.parent.iterdir() if (p / "__init__.py").is_file()]
    unlisted = sorted(room for room in rooms if f"`{room}`" not in doc)
    assert unlisted == [], "name each module in the package docstring, as `module`"


@pytest.mark.parametrize(
    "path",
    [p for p in modules() if p.name == "__init__.py"],
    ids=lambda p: str(p.parent.relative_to(PACKAGE.parent)),
)
def test_a_package_init_only_re_exports(path: Path) -> None:
    assert logic(path) == [], "move it into a module of the package and re-export it"


def test_no_modules_import_each_other() -> None:
    assert cycles(import_graph()) == []


def test_the_checks_catch_a_cycle_an_upward_import_and_logic_in_an_init(tmp_path: Path) -> None:
    """The checks above, on a small package that breaks each rule once."""
    package = tmp_path / "vkrama"
    files = {
        "__init__.py": '"""Top."""\n\n__version__ = "1"\n',
        "serve/__init__.py": '"""Serve."""\n\nfrom vkrama.serve.a import A\n\nX = A()\n',
        "serve/a.py": "from vkrama.serve import b\n\nclass A: ...\n",
        "serve/b.py": "def f() -> None:\n    from vkrama.serve.a import A  # lazy: still a cycle\n",
        "store/c.py": "from vkrama.serve import a\n",
        "bench/d.py": "from vkrama.serve import b\n",  # runs down the order: fine
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text, encoding="utf-8")
    assert cycles(import_graph(package)) == [["vkrama.serve.a", "vkrama.serve.b"]]
    assert logic(package / "serve/__init__.py") == ["line 5: Assign"]
    assert logic(package / "__init__.py") == []
    found = {module_name(path, package): upward(path, package) for path in modules(package)}
    assert {name: names for name, names in found.items() if names} == {
        "vkrama.store.c": ["vkrama.serve"]
    }


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


# Where a spelling of a llama.cpp flag is not llama.cpp's flag at all, and why.
NOT_LLAMA = {
    ("images/planning.py", "-t"): "podman build's tag",
    ("bench/plan.py", "flash_attn"): "BenchParams' own field, as the run record stores it",
    ("results/report.py", "flash_attn"): "BenchParams' field, read back from the run record",
    ("cli/bench.py", "--rpc"): "vkrama's own --rpc, named in a usage error",
}


def llama_spellings(path: Path, package: Path = PACKAGE) -> list[str]:
    """Each string constant of `path` that is a spelling in llama.cpp's flag table (either
    tool's flag, or llama-bench's JSON field), outside that table. vkrama's own command-line
    options (a `click.option(...)` call's names) may borrow llama.cpp's names."""
    from vkrama.llama_flags import FLAG

    spellings = {s for f in FLAG.values() for s in (f.bench, f.server, f.field) if s}
    relative = path.relative_to(package).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    options = {
        id(arg)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "option"
        for arg in node.args
    }
    return [
        f"{relative}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and node.value in spellings
        and id(node) not in options
        and (relative, node.value) not in NOT_LLAMA
    ]


def test_llama_cpp_flags_are_spelled_only_in_their_table() -> None:
    found = [hit for path in modules() if path.name != "llama_flags.py"
             for hit in llama_spellings(path)]  # fmt: skip
    assert found == []


def test_the_spelling_check_catches_a_flag_written_out(tmp_path: Path) -> None:
    package = tmp_path / "vkrama"
    package.mkdir()
    (package / "bad.py").write_text('ARGV = ["llama-server", "--ubatch-size", "512"]\n')
    (package / "ok.py").write_text('import click\nclick.option("--threads")\nX = "-ub 256"\n')
    assert llama_spellings(package / "bad.py", package) == ["bad.py:1: '--ubatch-size'"]
    assert llama_spellings(package / "ok.py", package) == []
