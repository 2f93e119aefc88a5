"""The README and docs/ must not contradict the code: exit codes, commands, the two set-up
commands, the settings example, and every relative link (file and #anchor) resolves."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from vkrama.errors import ExitStatus

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
DOCS = REPO / "docs"
CONFIGURATION = (DOCS / "configuration.md").read_text()


def test_the_exit_code_table_matches_the_enum() -> None:
    section = CONFIGURATION.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {
        int(code): text for code, text in re.findall(r"\| (\d+) \| ([^|]+?) (?=\|)", section)
    }
    assert set(documented) == {int(status) for status in ExitStatus}


def test_the_tuning_page_carries_llama_cpps_flag_table() -> None:
    from vkrama import llama_flags

    text = (DOCS / "tuning.md").read_text(encoding="utf-8")
    assert llama_flags.markdown() in text
    assert "| `-ub` | `--ubatch-size` | `n_ubatch` |" in text  # one row written out


def test_readme_names_the_scripts_that_exist() -> None:
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert f"bash {script}" in README
        assert (REPO / script).is_file()
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()


@pytest.mark.slow
def test_the_wheel_ships_the_containerfiles(tmp_path: Path) -> None:
    import subprocess
    import sys

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("vkrama-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("vkrama/containerfiles/")}
    expected = {p.name for p in (REPO / "containerfiles").iterdir() if p.is_file()}
    assert expected and expected <= shipped


def test_the_settings_example_is_a_valid_config(tmp_path: Path) -> None:
    from vkrama import config

    example = CONFIGURATION.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "vkrama.toml"
    path.write_text(example)
    settings = config.load(environ={}, files=[path])
    assert settings.source("serve.port") == str(path)
    assert settings["engine.url"].startswith("unix://")


# ─── Links ────────────────────────────────────────────────────────────────────────────
# A relative link in a page is a path from that page's folder, optionally with a #anchor
# that GitHub makes from a heading. Addresses with a scheme (https:, mailto:) are not checked:
# no network here.

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _pages() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.glob("*.md")), REPO / "scripts/gpu-machine/README.md"]


def _anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, spaces become hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def _links(page: Path) -> list[str]:
    return [t for t in LINK.findall(FENCE.sub("", page.read_text())) if ":" not in t]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, broken


def test_the_anchor_rule_matches_github() -> None:
    assert _anchor("Two H100s: a split, and serving under load") == (
        "two-h100s-a-split-and-serving-under-load"
    )
    assert _anchor("Serving benchmark: `vkrama bench --serve`") == (
        "serving-benchmark-vkrama-bench---serve"
    )


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(REPO / t.partition("#")[0]).resolve() for t in _links(REPO / "README.md")}
    orphans = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not orphans, f"add these pages to the README's Documentation table: {orphans}"


def test_the_readme_stays_short() -> None:
    lines = README.count("\n")
    assert lines < 250, (
        f"README.md has {lines} lines: it is for users (what, install, the two commands, a tour,"
        " the verdict, links); put details and measurement history on a page under docs/"
    )
