"""Registry credentials and TLS: `vkrama pull oci://…` against Debian's real `docker-registry`
with htpasswd Basic auth over TLS (a self-signed certificate made here), and a plain-http
registry under a non-loopback name that only `models.insecure_registries` lets vkrama use.

Credentials come from the usual auth files (podman's, skopeo's and docker's); the CA is
trusted through REQUESTS_CA_BUNDLE, SSL_CERT_FILE or `models.ca_bundle`. Neither the password
nor its base64 form may show up in any output or in the store.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from store_servers import RegistryAuth, docker_registry, push_artifact, self_signed, sha256
from test_pull import assert_clean_failure
from test_pull_oci import MODELPACK

from vkrama.errors import ExitStatus

PASSWORD = "pw-s3cret-7f3a"


@dataclass(frozen=True)
class Secured:
    host: str
    auth: RegistryAuth
    ref: str
    sha256: str

    @property
    def basic(self) -> str:
        return base64.b64encode(f"{self.auth.user}:{self.auth.password}".encode()).decode()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("secure-registry")
    cert, key = self_signed(root, "127.0.0.1")
    auth = RegistryAuth("vkrama", PASSWORD, cert, key)
    with docker_registry(root, auth) as host:
        data = tiny_model.read_bytes()
        artifact, config, layer = MODELPACK
        push_artifact(host, "models/tiny", "v1",
                      [(layer, data, {"org.cncf.model.filepath": "tiny-f16.gguf"})],
                      artifact, config, auth=auth)  # fmt: skip
        yield Secured(host, auth, f"oci://{host}/models/tiny:v1", sha256(data))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """HOME and XDG_RUNTIME_DIR of their own: no auth file of the machine is read; and no CA
    bundle of the machine's either, so each test says what vkrama trusts."""
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "home").mkdir()
    (tmp_path / "run").mkdir()
    return {"HOME": str(tmp_path / "home"), "XDG_RUNTIME_DIR": str(tmp_path / "run"),
            "VKRAMA_MODELS_RETRIES": "1"}  # fmt: skip


def write_auth(path: Path, key: str, entry: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {key: entry}}))


def assert_secret_kept(secured: Secured, *texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text and secured.basic not in text


def stored_text() -> str:
    models = Path(os.environ["VKRAMA_HOME"]) / "models"
    return "".join(p.read_text() for p in models.rglob("*.json"))


@pytest.mark.parametrize(
    ("where", "key", "form"),
    [
        pytest.param("REGISTRY_AUTH_FILE", "HOST", "auth", id="registry-auth-file-variable"),
        pytest.param("XDG_RUNTIME_DIR/containers/auth.json", "HOST", "auth",
                     id="podman-login-runtime-auth-json"),
        pytest.param("HOME/.config/containers/auth.json", "HOST", "username",
                     id="containers-auth-json-with-username-and-password"),
        pytest.param("HOME/.docker/config.json", "https://HOST", "auth",
                     id="docker-config-json-keyed-by-url"),
    ],
)  # fmt: skip
def test_credentials_from_each_auth_file_pull_over_tls(
    vkrama, secured: Secured, home: dict[str, str], tmp_path: Path, where: str, key: str,
    form: str,
) -> None:  # fmt: skip
    env = {**home, "REQUESTS_CA_BUNDLE": str(secured.auth.cert)}
    if where == "REGISTRY_AUTH_FILE":
        path = tmp_path / "elsewhere" / "auth.json"
        env["REGISTRY_AUTH_FILE"] = str(path)
    else:
        first, rest = where.split("/", 1)
        path = Path(home[first]) / rest
    entry = (
        {"auth": secured.basic}
        if form == "auth"
        else {"username": secured.auth.user, "password": PASSWORD}
    )
    write_auth(path, key.replace("HOST", secured.host), entry)
    result = vkrama("-v", "pull", secured.ref, env=env)
    assert result.returncode == 0, result.stderr
    assert secured.sha256 in result.stdout
    listing = vkrama("list", "--json", env=env)
    assert json.loads(listing.stdout)[0]["sha256"] == secured.sha256
    assert_secret_kept(secured, result.stdout, result.stderr, listing.stdout, stored_text())


def test_without_credentials_it_is_an_auth_error_naming_the_auth_files(
    vkrama, secured: Secured, home: dict[str, str]
) -> None:
    env = {**home, "REQUESTS_CA_BUNDLE": str(secured.auth.cert)}
    result = vkrama("pull", secured.ref, env=env)
    assert_clean_failure(result, ExitStatus.AUTH, "wants credentials")
    (hint,) = [line for line in result.stderr.splitlines() if line.startswith("Hint:")]
    assert f"podman login {secured.host}" in hint
    assert f"{home['HOME']}/.config/containers/auth.json" in hint
    assert f"{home['XDG_RUNTIME_DIR']}/containers/auth.json" in hint
    assert json.loads(vkrama("list", "--json", env=env).stdout) == []


def test_wrong_credentials_are_refused_without_showing_them(
    vkrama, secured: Secured, home: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "auth.json"
    wrong = base64.b64encode(f"{secured.auth.user}:not-{PASSWORD}".encode()).decode()
    write_auth(path, secured.host, {"auth": wrong})
    env = {**home, "REGISTRY_AUTH_FILE": str(path), "REQUESTS_CA_BUNDLE": str(secured.auth.cert)}
    result = vkrama("pull", secured.ref, env=env)
    assert_clean_failure(result, ExitStatus.AUTH, f"refused the credentials from {path}")
    verbose = vkrama("-v", "pull", secured.ref, env=env)  # -v adds the traceback
    for text in (result.stdout, result.stderr, verbose.stdout, verbose.stderr):
        assert wrong not in text and f"not-{PASSWORD}" not in text


@pytest.mark.parametrize(
    "trust",
    ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "VKRAMA_MODELS_CA_BUNDLE"],
    ids=["requests-ca-bundle", "ssl-cert-file", "models-ca-bundle-setting"],
)
def test_the_registry_ca_is_trusted_only_when_configured(
    vkrama, secured: Secured, home: dict[str, str], tmp_path: Path, trust: str
) -> None:
    path = tmp_path / "auth.json"
    write_auth(path, secured.host, {"auth": secured.basic})
    env = {**home, "REGISTRY_AUTH_FILE": str(path)}
    untrusted = vkrama("pull", secured.ref, env=env)
    assert_clean_failure(untrusted, ExitStatus.NETWORK, "TLS certificate is not trusted")
    assert "models.ca_bundle" in untrusted.stderr
    trusted = vkrama("pull", secured.ref, env={**env, trust: str(secured.auth.cert)})
    assert trusted.returncode == 0, trusted.stderr


def test_a_missing_ca_bundle_is_a_config_error(
    vkrama, secured: Secured, home: dict[str, str]
) -> None:
    result = vkrama(
        "pull", secured.ref, env={**home, "VKRAMA_MODELS_CA_BUNDLE": "/nonexistent.pem"}
    )
    assert_clean_failure(result, ExitStatus.CONFIG, "CA bundle /nonexistent.pem does not exist")


@pytest.fixture(scope="module")
def named_plain(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[str]:
    """A plain-http registry under this machine's host name, which is not a loopback name."""
    name = socket.gethostname()
    ip = socket.gethostbyname(name)
    with docker_registry(tmp_path_factory.mktemp("plain"), ip=ip, name=name) as host:
        artifact, config, layer = MODELPACK
        push_artifact(host, "models/tiny", "v1",
                      [(layer, tiny_model.read_bytes(), {"org.cncf.model.filepath": "t.gguf"})],
                      artifact, config)  # fmt: skip
        yield host


def test_plain_http_off_loopback_needs_the_insecure_registries_setting(
    vkrama, named_plain: str, home: dict[str, str], tiny_model: Path
) -> None:
    ref = f"oci://{named_plain}/models/tiny:v1"
    refused = vkrama("pull", ref, env=home)
    assert_clean_failure(refused, ExitStatus.NETWORK, "TLS handshake failed")
    assert "models.insecure_registries" in refused.stderr
    allowed = {**home, "VKRAMA_MODELS_INSECURE_REGISTRIES": f"other:5000,{named_plain}"}
    result = vkrama("pull", ref, env=allowed)
    assert result.returncode == 0, result.stderr
    assert sha256(tiny_model.read_bytes()) in result.stdout
