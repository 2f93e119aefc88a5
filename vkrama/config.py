"""Settings: defaults, TOML files, `VKRAMA_*` variables and flags, each value with its source.

Stage: first in the pipeline (flags/env/toml ─► Settings). Reads files and the environment
it is given; must not print, must not touch the network or podman, and never writes
`os.environ`.
Over 300 lines because every setting's default, type, range and source are read and
checked in one place, which `config show` reports from.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vkrama.errors import ExitStatus, VkramaError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# Every setting vkrama knows, with its default. The type of the default is the type a
# file or variable must give; a dict default is a free-form table (e.g. shortnames); a list
# default takes a TOML array of strings or a comma-separated variable.
DEFAULTS: dict[str, Any] = {
    "home": "",  # empty: $XDG_DATA_HOME/vkrama
    "offline": False,
    "engine.url": "",  # empty: discover a socket, else start a private service
    "engine.idle_timeout": 5,
    # Seconds to wait for podman's API service when it goes away mid-run (killed, restarted,
    # a socket systemd brings back): the containers run on under conmon, and vkrama goes on
    # with them once it answers. 0: fail at once.
    "engine.reconnect": 60,
    "images.pull": "missing",  # missing: build an absent image on first use; never: refuse
    "images.base": "docker.io/library/debian:sid",
    "images.apt_options": "",  # extra apt-get options for image builds (build arg APT_OPTIONS)
    "serve.host": "127.0.0.1",
    "serve.port": 8080,
    "serve.backend": "auto",
    "serve.timeout": 120,
    "models.hf_endpoint": "https://huggingface.co",
    "models.ollama_registry": "https://registry.ollama.ai",
    "models.shortnames": {},
    "models.retries": 4,  # download attempts after the first, with doubling backoff from 0.5 s
    # Connections for one large file (≥ 32 MiB) on a server that answers ranges. Hubs and CDNs
    # cap each connection (often at tens of MB/s); 8 fill a 1–3 Gbit/s line at such caps while
    # costing the server little more than one browser does. 1: a single stream.
    "models.streams": 8,
    # Registries (HOST:PORT) that may be reached over plain http when they do not speak TLS;
    # loopback ones always may. Certificates, where TLS is spoken, are verified all the same.
    "models.insecure_registries": [],
    # PEM file of CAs to trust for model downloads (a private registry or mirror); empty:
    # REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE or SSL_CERT_FILE if set, else certifi's bundle.
    "models.ca_bundle": "",
    "bench.timeout": 1800,
    # `bench` first checks each stack's output against the CPU's (`vkrama check`) where this
    # model and image have no check yet; `--no-check` skips it once, false always.
    "bench.check": True,
    # Where detection reads the host: a copied tree reproduces a bug report's machine.
    "hardware.sysfs_root": "/sys",
    "hardware.dev_root": "/dev",
    "hardware.cdi_dirs": ["/etc/cdi", "/var/run/cdi"],
    "hardware.pci_ids": ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"],
}

# Numbers with a range: (lowest, highest or None). The type check alone let a port of
# 99999 or a negative retry count through to fail far from the setting that caused it.
RANGES: dict[str, tuple[int, int | None]] = {
    "serve.port": (1, 65535),
    "serve.timeout": (1, None),
    "engine.idle_timeout": (0, None),
    "engine.reconnect": (0, None),
    "models.retries": (0, None),
    "models.streams": (1, 64),
    "bench.timeout": (1, None),
}

# Variables that do not follow the VKRAMA_SECTION_KEY pattern but are honoured as users
# of the wider ecosystem expect.
ALIASES: dict[str, str] = {
    "VKRAMA_HOME": "home",
    "HF_ENDPOINT": "models.hf_endpoint",
}

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Setting:
    """One effective value and where it came from (`default`, a file path, `env VAR`, `flag`)."""

    value: Any
    source: str
    problem: str | None = None  # why the value is invalid (only when load collects problems)


@dataclass(frozen=True)
class Settings:
    """The effective configuration. Look values up with `settings["serve.host"]`."""

    values: Mapping[str, Setting]
    files_read: tuple[Path, ...] = ()
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.values[key].value

    def source(self, key: str) -> str:
        return self.values[key].source

    @property
    def home(self) -> Path:
        """Where all state lives: models, results, the private podman socket."""
        if self["home"]:
            return Path(self["home"]).expanduser()
        data = self.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(data) / "vkrama"

    @property
    def runtime_dir(self) -> Path:
        """Per-user directory for sockets (not shared between users, short path)."""
        base = self.environ.get("XDG_RUNTIME_DIR")
        if base and os.access(base, os.W_OK):
            return Path(base) / "vkrama"
        return Path(f"/tmp/vkrama-{os.getuid()}")

    @property
    def offline(self) -> bool:
        return bool(self["offline"])

    def with_overrides(self, overrides: Mapping[str, Any], source: str = "flag") -> Settings:
        """Settings with flag values laid on top (None means: flag not given)."""
        values = dict(self.values)
        for key, value in overrides.items():
            if value is None:
                continue
            _check_known(key, source)
            values[key] = Setting(_coerce(key, value, source), source)
        return Settings(values, self.files_read, self.environ)


def config_files(environ: Mapping[str, str]) -> list[Path]:
    """Config files in increasing precedence: system-wide, then the user's.

    A file named by VKRAMA_CONFIG must exist: a typo there would otherwise run with
    defaults the user thinks they replaced."""
    if "VKRAMA_CONFIG" in environ:
        named = Path(environ["VKRAMA_CONFIG"]).expanduser()
        if not named.is_file():
            problem = "is a directory" if named.is_dir() else "does not exist"
            raise VkramaError(
                f"env VKRAMA_CONFIG: config file {named} {problem}",
                hint="point VKRAMA_CONFIG at a TOML file, or unset it to read the usual files",
                status=ExitStatus.CONFIG,
            )
        return [named]
    user_base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [Path("/etc/vkrama/vkrama.toml"), Path(user_base) / "vkrama" / "vkrama.toml"]


def load(
    environ: Mapping[str, str] | None = None,
    files: list[Path] | None = None,
    problems: list[VkramaError] | None = None,
) -> Settings:
    """Defaults, then each file that exists, then environment variables.

    A bad file or value raises, unless `problems` is given: then each is appended there
    and the value keeps its default, so `config show` can list them all."""
    env = dict(os.environ if environ is None else environ)
    values = {key: Setting(value, "default") for key, value in DEFAULTS.items()}
    read: list[Path] = []
    paths: list[Path] = []
    with _collecting(problems):
        paths = config_files(env) if files is None else files
    for path in paths:
        if not path.is_file():
            continue
        with _collecting(problems):
            text = _read_text(path)
            raw = _read_file(path, text, problems)
            for key, value in raw.items():
                where = _line_of(key, str(path), text)
                values[key] = _setting(key, value, where, str(path), problems)
            read.append(path)
    for var, raw_value in sorted(env.items()):
        env_key = _key_for_variable(var)
        if env_key is not None:
            source = f"env {var}"
            values[env_key] = _setting(env_key, raw_value, source, source, problems)
    home = values["home"]
    if home.value:
        with _collecting(problems):
            _check_home(Path(home.value).expanduser(), home.source)
    return Settings(values, tuple(read), env)


def _setting(
    key: str, raw: Any, where: str, source: str, problems: list[VkramaError] | None
) -> Setting:
    try:
        return Setting(_coerce(key, raw, where), source)
    except VkramaError as error:
        if problems is None:
            raise
        problems.append(error)
        return Setting(raw, source, problem=error.message)


@contextlib.contextmanager
def _collecting(problems: list[VkramaError] | None) -> Iterator[None]:
    """Raise a bad setting's error, or note it in `problems` and go on."""
    try:
        yield
    except VkramaError as error:
        if problems is None:
            raise
        problems.append(error)


def _check_home(home: Path, source: str) -> None:
    """VKRAMA_HOME must be a directory or creatable as one: the first existing part of the
    path decides (a regular file there fails every later write with ENOTDIR)."""
    for part in (home, *home.parents):
        if part.is_dir():
            return
        if part.exists() or part.is_symlink():
            what = "is not a directory" if part == home else f"lies under {part}, not a directory"
            raise VkramaError(
                f"{source}: home {home} {what}",
                hint="point it at a directory (created if missing) where vkrama keeps its state",
                status=ExitStatus.CONFIG,
            )


def _key_for_variable(var: str) -> str | None:
    if var in ALIASES:
        return ALIASES[var]
    if not var.startswith("VKRAMA_") or var == "VKRAMA_CONFIG":
        return None
    name = var.removeprefix("VKRAMA_").lower()
    for key in DEFAULTS:
        if key.replace(".", "_") == name:
            return key
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise VkramaError(
            f"{path}: cannot read config file: {reason}",
            hint="make it a readable UTF-8 TOML file, or move it away",
            status=ExitStatus.CONFIG,
        ) from None


def _read_file(path: Path, text: str, problems: list[VkramaError] | None = None) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "... (at line 3, column 7)"; show it the way compilers do.
        message = str(exc)
        match = re.search(r"\(at line (\d+), column \d+\)$", message)
        line = match.group(1) if match else "1"
        message = re.sub(r"\s*\(at line \d+, column \d+\)$", "", message)
        raise VkramaError(
            f"{path}:{line}: {message}",
            hint="fix the TOML syntax on that line",
            status=ExitStatus.CONFIG,
        ) from None
    flat: dict[str, Any] = {}
    _flatten(data, "", flat)
    known = {}
    for key, value in flat.items():
        with _collecting(problems):
            _check_known(key, str(path), text)
            known[key] = value
    return known


def _flatten(table: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and not isinstance(DEFAULTS.get(key), dict):
            _flatten(value, f"{key}.", out)
        else:
            out[key] = value


def _line_of(key: str, source: str, text: str) -> str:
    """`FILE:LINE` of the line that sets `key` (its leaf name), else just `FILE`."""
    leaf = key.rsplit(".", 1)[-1]
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*{re.escape(leaf)}\s*=", line):
            return f"{source}:{number}"
    return source


def _check_known(key: str, source: str, text: str | None = None) -> None:
    if key in DEFAULTS:
        return
    where = source if text is None else _line_of(key, source, text)
    raise VkramaError(
        f"{where}: unknown setting {key!r}",
        hint="`vkrama config show` lists every setting vkrama knows",
        status=ExitStatus.CONFIG,
    )


def _coerce(key: str, value: Any, source: str) -> Any:
    coerced = _coerce_type(key, value, source)
    if key in RANGES:
        lowest, highest = RANGES[key]
        if coerced < lowest or (highest is not None and coerced > highest):
            wanted = f"from {lowest} to {highest}" if highest is not None else f">= {lowest}"
            raise VkramaError(
                f"{source}: {key} must be {wanted}, got {coerced}",
                hint=f"give a number {wanted}, or drop it for the default ({DEFAULTS[key]})",
                status=ExitStatus.CONFIG,
            )
    return coerced


def _coerce_type(key: str, value: Any, source: str) -> Any:
    default = DEFAULTS[key]
    wanted = type(default)
    if wanted is list:
        return _coerce_list(key, value, source)
    if isinstance(value, str) and wanted is not str:
        try:
            if wanted is bool:
                lowered = value.strip().lower()
                if lowered not in TRUE_WORDS | FALSE_WORDS:
                    raise ValueError(value)
                return lowered in TRUE_WORDS
            if wanted is int:
                return int(value)
        except ValueError:
            raise VkramaError(
                f"{source}: {key} must be {wanted.__name__}, got {value!r}",
                hint=f"give a {wanted.__name__}, or drop it for the default ({default!r})",
                status=ExitStatus.CONFIG,
            ) from None
    if (wanted is int and isinstance(value, bool)) or not isinstance(value, wanted):
        raise VkramaError(
            f"{source}: {key} must be {wanted.__name__}, got {value!r}",
            hint=f"give a {wanted.__name__}, or drop it for the default ({default!r})",
            status=ExitStatus.CONFIG,
        )
    return value


def _coerce_list(key: str, value: Any, source: str) -> list[str]:
    # Variables cannot hold arrays: "a:5000, b:5000" is the list a file writes as an array.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    raise VkramaError(
        f"{source}: {key} must be a list of strings, got {value!r}",
        status=ExitStatus.CONFIG,
    )
