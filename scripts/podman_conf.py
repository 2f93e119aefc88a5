"""Give podman what vkrama needs on this host without touching anyone's containers.conf.

Set-up step (called by scripts/setup.sh as root; stdlib only, it runs before the venv).
Podman 4.3.1 merges /usr/share/containers/containers.conf, then /etc/containers/
containers.conf, then /etc/containers/containers.conf.d/*.conf in name order (measured:
`podman --log-level=debug info` prints "Merged system config" for each, and a drop-in's
default_ulimits reached a container). So vkrama writes its settings to a drop-in it owns,
and only the keys that no administrator's file sets already: a key the user set is the
user's choice, and a drop-in would silently override it. Must never write any file but
vkrama's own drop-in; rewrites it only when its content changes (running twice is a no-op).

    python3 scripts/podman_conf.py --nofile 20000 --nproc 4096 [--root /]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

DROP_IN = "etc/containers/containers.conf.d/50-vkrama.conf"
MARKER = "# written by vkrama's scripts/setup.sh (vkrama-owned: rewritten on every set-up)"
# What an administrator may have set: their file and their drop-ins (not the distribution's
# defaults under /usr/share, which vkrama's drop-in overrides like any admin file would).
ADMIN_FILES = ("etc/containers/containers.conf",)
ADMIN_DROP_INS = "etc/containers/containers.conf.d"

_SECTION = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


def keys_set(text: str) -> set[tuple[str, str]]:
    """(section, key) pairs a containers.conf sets; comments and subtables kept apart."""
    found: set[tuple[str, str]] = set()
    section = ""
    for line in text.splitlines():
        header = _SECTION.match(line)
        if header:
            section = header.group(1)
            continue
        key = _KEY.match(line)
        if key:
            found.add((section, key.group(1)))
    return found


def wanted(nofile: int, nproc: int) -> dict[tuple[str, str], str]:
    """What vkrama needs here, as TOML values: runc (crun fails on hybrid cgroup hosts)
    and rlimits under the host's hard limits (podman's defaults exceed them)."""
    return {
        ("containers", "default_ulimits"): f'["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]',
        ("engine", "runtime"): '"runc"',
    }


def admin_files(root: Path) -> list[Path]:
    own = root / DROP_IN
    files = [root / name for name in ADMIN_FILES]
    files += sorted((root / ADMIN_DROP_INS).glob("*.conf"))
    return [f for f in files if f.is_file() and f != own]


def render(missing: dict[tuple[str, str], str]) -> str:
    lines = [MARKER]
    for section in sorted({s for s, _ in missing}):
        lines += ["", f"[{section}]"]
        lines += [f"{key} = {value}" for (s, key), value in sorted(missing.items()) if s == section]
    return "\n".join(lines) + "\n"


def apply(root: Path, nofile: int, nproc: int) -> list[str]:
    """Bring vkrama's drop-in up to date; the lines to tell the user."""
    told = []
    missing = wanted(nofile, nproc)
    for path in admin_files(root):
        for section, key in sorted(keys_set(path.read_text(errors="replace")) & missing.keys()):
            told.append(
                f"setup: {path} sets {section}.{key}; leaving it"
                f" (vkrama would use {key} = {missing.pop((section, key))})"
            )
    own = root / DROP_IN
    if not missing:
        if own.exists():
            own.unlink()
            told.append(f"setup: removed {own}: other files set everything it did")
        return told
    text = render(missing)
    if own.exists() and own.read_text() == text:
        return told
    own.parent.mkdir(parents=True, exist_ok=True)
    partial = own.with_suffix(".tmp")  # not *.conf: podman never reads a half-written file
    partial.write_text(text)
    partial.replace(own)
    told.append(f"setup: wrote {own} ({', '.join(f'{s}.{k}' for s, k in sorted(missing))})")
    return told


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nofile", type=int, required=True)
    parser.add_argument("--nproc", type=int, required=True)
    parser.add_argument("--root", type=Path, default=Path("/"), help="file system root (tests)")
    args = parser.parse_args(argv)
    for line in apply(args.root, args.nofile, args.nproc):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
