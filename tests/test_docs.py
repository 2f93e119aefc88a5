"""The README must not contradict the code: exit codes, commands and the two set-up commands."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from vkrama.errors import ExitStatus

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_readme_exit_code_table_matches_the_enum() -> None:
    section = README.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {
        int(code): text for code, text in re.findall(r"\| (\d+) \| ([^|]+?) (?=\|)", section)
    }
    assert set(documented) == {int(status) for status in ExitStatus}


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


def test_the_readme_settings_example_is_a_valid_config(tmp_path: Path) -> None:
    from vkrama import config

    example = README.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "vkrama.toml"
    path.write_text(example)
    settings = config.load(environ={}, files=[path])
    assert settings.source("serve.port") == str(path)
    assert settings["engine.url"].startswith("unix://")
