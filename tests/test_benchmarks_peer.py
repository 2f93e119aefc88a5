"""The benchmark harness says what its ramalama side lacks instead of failing 125 per cell."""

from __future__ import annotations

from pathlib import Path

from benchmarks.inputs import podman_init_missing


def test_a_missing_podman_init_binary_is_named_with_its_package(tmp_path: Path) -> None:
    why = podman_init_missing((tmp_path / "catatonit",))
    assert "--init" in why and "apt-get install catatonit" in why and str(tmp_path) in why


def test_setup_sh_installs_what_ramalamas_init_needs() -> None:
    # scripts/setup.sh ran before the tests (CI: scripts/test.sh), so podman's init is there
    assert podman_init_missing() == ""
    assert "catatonit" in (Path(__file__).parent.parent / "scripts/setup.sh").read_text()
