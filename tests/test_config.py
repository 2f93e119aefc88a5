"""Settings: precedence (default < file < env < flag), sources, and bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from vkrama import config
from vkrama.errors import ExitStatus, VkramaError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vkrama.toml"
    path.write_text(text)
    return path


def test_defaults_say_they_are_defaults() -> None:
    settings = config.load(environ={}, files=[])
    assert settings["serve.host"] == "127.0.0.1"
    assert settings.source("serve.host") == "default"


@pytest.mark.parametrize(
    ("file_text", "environ", "flags", "expected", "source"),
    [
        ("[serve]\nport = 9000\n", {}, {}, 9000, "FILE"),
        (
            "[serve]\nport = 9000\n",
            {"VKRAMA_SERVE_PORT": "9001"},
            {},
            9001,
            "env VKRAMA_SERVE_PORT",
        ),
        (
            "[serve]\nport = 9000\n",
            {"VKRAMA_SERVE_PORT": "9001"},
            {"serve.port": 9002},
            9002,
            "flag",
        ),
        ("", {}, {"serve.port": None}, 8080, "default"),
    ],
    ids=[
        "a-file-overrides-the-default",
        "an-environment-variable-overrides-the-file",
        "a-flag-overrides-everything",
        "a-flag-not-given-changes-nothing",
    ],
)
def test_precedence(
    tmp_path: Path,
    file_text: str,
    environ: dict[str, str],
    flags: dict[str, object],
    expected: int,
    source: str,
) -> None:
    path = write(tmp_path, file_text)
    settings = config.load(environ=environ, files=[path]).with_overrides(flags)
    assert settings["serve.port"] == expected
    assert settings.source("serve.port") == source.replace("FILE", str(path))


def test_later_files_override_earlier_ones(tmp_path: Path) -> None:
    system = tmp_path / "system.toml"
    system.write_text('[serve]\nhost = "0.0.0.0"\nport = 1\n')
    user = tmp_path / "user.toml"
    user.write_text("[serve]\nport = 2\n")
    settings = config.load(environ={}, files=[system, user])
    assert (settings["serve.host"], settings["serve.port"]) == ("0.0.0.0", 2)
    assert settings.files_read == (system, user)


def test_vkrama_home_and_hf_endpoint_are_honoured(tmp_path: Path) -> None:
    settings = config.load(
        environ={"VKRAMA_HOME": str(tmp_path), "HF_ENDPOINT": "http://127.0.0.1:9"}, files=[]
    )
    assert settings.home == tmp_path
    assert settings["models.hf_endpoint"] == "http://127.0.0.1:9"
    assert settings.source("models.hf_endpoint") == "env HF_ENDPOINT"


def test_home_defaults_to_xdg_data_home(tmp_path: Path) -> None:
    settings = config.load(environ={"XDG_DATA_HOME": str(tmp_path)}, files=[])
    assert settings.home == tmp_path / "vkrama"


@pytest.mark.parametrize(
    ("file_text", "message"),
    [
        ("[serve]\nport = 9000\nhost = \n", ":3: Invalid value"),
        ("[serve]\nport = 9000\nbogus = 1\n", ":3: unknown setting 'serve.bogus'"),
        ('[serve]\nport = "many"\n', "serve.port must be int, got 'many'"),
    ],
    ids=["broken-toml-names-file-and-line", "unknown-key-names-its-line", "wrong-type-is-refused"],
)
def test_bad_files_are_config_errors(tmp_path: Path, file_text: str, message: str) -> None:
    path = write(tmp_path, file_text)
    with pytest.raises(VkramaError) as caught:
        config.load(environ={}, files=[path])
    assert caught.value.status == ExitStatus.CONFIG
    assert message in caught.value.message
    assert caught.value.message.startswith(str(path))


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("yes", True), ("off", False), ("0", False)]
)
def test_boolean_variables(raw: str, expected: bool) -> None:
    assert config.load(environ={"VKRAMA_OFFLINE": raw}, files=[]).offline is expected


def test_a_bad_boolean_variable_is_a_config_error() -> None:
    with pytest.raises(VkramaError) as caught:
        config.load(environ={"VKRAMA_OFFLINE": "maybe"}, files=[])
    assert caught.value.status == ExitStatus.CONFIG


@pytest.mark.parametrize(
    ("file_text", "environ", "expected"),
    [
        ("", {}, []),
        ('[models]\ninsecure_registries = ["reg.lan:5000", "10.0.0.2"]\n', {},
         ["reg.lan:5000", "10.0.0.2"]),
        ("", {"VKRAMA_MODELS_INSECURE_REGISTRIES": "reg.lan:5000, 10.0.0.2,"},
         ["reg.lan:5000", "10.0.0.2"]),
        ('[models]\ninsecure_registries = ["a:1"]\n', {"VKRAMA_MODELS_INSECURE_REGISTRIES": ""},
         []),
    ],
    ids=[
        "a-list-defaults-to-empty",
        "a-toml-array-is-a-list",
        "a-variable-is-split-at-commas",
        "an-empty-variable-clears-the-file's-list",
    ],
)  # fmt: skip
def test_list_settings(
    tmp_path: Path, file_text: str, environ: dict[str, str], expected: list[str]
) -> None:
    settings = config.load(environ=environ, files=[write(tmp_path, file_text)])
    assert settings["models.insecure_registries"] == expected


@pytest.mark.parametrize(
    "file_text",
    ["[models]\ninsecure_registries = true\n", "[models]\ninsecure_registries = [1, 2]\n"],
    ids=["a-boolean-is-not-a-list", "a-list-of-numbers-is-refused"],
)
def test_bad_lists_are_config_errors(tmp_path: Path, file_text: str) -> None:
    with pytest.raises(VkramaError) as caught:
        config.load(environ={}, files=[write(tmp_path, file_text)])
    assert caught.value.status == ExitStatus.CONFIG
    assert "models.insecure_registries must be a list of strings" in caught.value.message


@pytest.mark.parametrize(
    ("file_text", "environ", "where", "message"),
    [
        ("[serve]\nhost = \"::1\"\nport = 99999\n", {}, "FILE:3",
         "serve.port must be from 1 to 65535, got 99999"),
        ("[serve]\nport = -1\n", {}, "FILE:2", "serve.port must be from 1 to 65535, got -1"),
        ("", {"VKRAMA_SERVE_PORT": "99999"}, "env VKRAMA_SERVE_PORT",
         "serve.port must be from 1 to 65535, got 99999"),
        ("", {"VKRAMA_SERVE_PORT": "0"}, "env VKRAMA_SERVE_PORT",
         "serve.port must be from 1 to 65535, got 0"),
        ("[models]\nretries = -3\n", {}, "FILE:2", "models.retries must be >= 0, got -3"),
        ("", {"VKRAMA_MODELS_RETRIES": "-1"}, "env VKRAMA_MODELS_RETRIES",
         "models.retries must be >= 0, got -1"),
        ("[serve]\ntimeout = 0\n", {}, "FILE:2", "serve.timeout must be >= 1, got 0"),
        ("", {"VKRAMA_BENCH_TIMEOUT": "-5"}, "env VKRAMA_BENCH_TIMEOUT",
         "bench.timeout must be >= 1, got -5"),
        ("", {"VKRAMA_ENGINE_IDLE_TIMEOUT": "-1"}, "env VKRAMA_ENGINE_IDLE_TIMEOUT",
         "engine.idle_timeout must be >= 0, got -1"),
    ],
    ids=[
        "a-port-above-65535-in-a-file-names-its-line",
        "a-negative-port-in-a-file",
        "a-port-above-65535-in-the-environment-names-the-variable",
        "port-zero-in-the-environment",
        "a-negative-retry-count-in-a-file",
        "a-negative-retry-count-in-the-environment",
        "a-zero-serve-timeout",
        "a-negative-bench-timeout",
        "a-negative-idle-timeout",
    ],
)  # fmt: skip
def test_numbers_out_of_range_are_config_errors_naming_their_source(
    tmp_path: Path, file_text: str, environ: dict[str, str], where: str, message: str
) -> None:
    path = write(tmp_path, file_text)
    with pytest.raises(VkramaError) as caught:
        config.load(environ=environ, files=[path])
    assert caught.value.status == ExitStatus.CONFIG
    assert caught.value.message == f"{where.replace('FILE', str(path))}: {message}"
    assert caught.value.hint and "default" in caught.value.hint


def test_a_range_holds_for_flags_too() -> None:
    with pytest.raises(VkramaError) as caught:
        config.load(environ={}, files=[]).with_overrides({"serve.port": 70000})
    assert caught.value.message == "flag: serve.port must be from 1 to 65535, got 70000"


def test_the_edges_of_a_range_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "[serve]\nport = 65535\n[models]\nretries = 0\n")
    settings = config.load(environ={"VKRAMA_ENGINE_IDLE_TIMEOUT": "0"}, files=[path])
    assert (settings["serve.port"], settings["models.retries"]) == (65535, 0)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("file", "env VKRAMA_HOME: home {home} is not a directory"),
        ("under-a-file", "env VKRAMA_HOME: home {home} lies under {file}, not a directory"),
    ],
    ids=["vkrama-home-naming-a-regular-file", "vkrama-home-under-a-regular-file"],
)
def test_a_home_that_cannot_be_a_directory_is_a_config_error(
    tmp_path: Path, layout: str, message: str
) -> None:
    file = tmp_path / "plain"
    file.write_text("not a directory\n")
    home = file if layout == "file" else file / "vkrama"
    with pytest.raises(VkramaError) as caught:
        config.load(environ={"VKRAMA_HOME": str(home)}, files=[])
    assert caught.value.status == ExitStatus.CONFIG
    assert caught.value.message == message.format(home=home, file=file)
    assert caught.value.hint


def test_a_home_that_does_not_exist_yet_is_fine(tmp_path: Path) -> None:
    home = tmp_path / "new" / "vkrama"
    assert config.load(environ={"VKRAMA_HOME": str(home)}, files=[]).home == home


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_config_file_named_explicitly_must_exist(tmp_path: Path, kind: str) -> None:
    named = tmp_path / "vkrama.toml"
    if kind == "directory":
        named.mkdir()
    with pytest.raises(VkramaError) as caught:
        config.load(environ={"VKRAMA_CONFIG": str(named)})
    assert caught.value.status == ExitStatus.CONFIG
    problem = "does not exist" if kind == "missing" else "is a directory"
    assert caught.value.message == f"env VKRAMA_CONFIG: config file {named} {problem}"
    assert caught.value.hint and "VKRAMA_CONFIG" in caught.value.hint


def test_an_unreadable_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "vkrama.toml"
    path.write_bytes(b'[serve]\nhost = "\xff"\n')
    with pytest.raises(VkramaError) as caught:
        config.load(environ={}, files=[path])
    assert caught.value.message == f"{path}: cannot read config file: not UTF-8 text"
