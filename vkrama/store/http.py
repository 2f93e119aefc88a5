"""HTTP for the store: one requests session with retries and backoff, and every failure in
words.

Stage: store (what the sources and the transfers send and how their failures read). Retries
transient failures (timeouts, dropped connections, 408/425/429/5xx) with jittered backoff,
or after the wait a 429/503's Retry-After asks for, reporting each retry as a `Retry` event;
turns every other failure into one `VkramaError` whose wording lives here (`reason`,
`network_error`, `status_error`, `tls_error`). Must not print and must never log or show
request headers or query strings: they carry tokens.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import InvalidHeader
from urllib3.util import Retry as Urllib3Retry

from vkrama import __version__
from vkrama.config import Settings
from vkrama.errors import ExitStatus, VkramaError
from vkrama.progress import NULL, Reporter, Retry
from vkrama.store.splice import ConnectionLost

T = TypeVar("T", dict[str, Any], list[Any])
TRANSIENT = {408, 425, 429, 500, 502, 503, 504}
# The statuses whose Retry-After says when to come back (RFC 9110 10.2.3; urllib3's list less
# 413, which vkrama's GETs never earn). A Retry-After longer than MAX_WAIT_S is not sat
# through: the pull fails at once and says how long the server asked for. The backoff stops
# doubling there too (urllib3's backoff_max is the same 120 s).
RETRY_AFTER = {429, 503}
MAX_WAIT_S = 120.0
# Each backoff waits up to half again as long, at random, so that the streams of one ranged
# download (or several pulls) that failed together do not all come back in the same instant.
JITTER = 0.5


# Why not urllib3's Retry mounted on the session's HTTPAdapter, which honours Retry-After and
# jitters: it covers only the request up to the response's headers, while most of a pull's
# retries are of a body that broke mid-way (download.py, ranges.py: a new Range from the bytes
# held, with the same backoff and the same Retry events); it retries an untrusted TLS
# certificate, which no wait can fix; and its MaxRetryError/RetryError would replace the
# failures `reason` words. Its Retry-After parser (seconds or an HTTP-date) is used as is.


class Http:
    """A requests session with retries, backoff and errors turned into VkramaError."""

    def __init__(
        self,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 30.0,
        verify: bool | str = True,
        insecure: tuple[str, ...] = (),
        on_progress: Reporter = NULL,
        streams: int = 1,
    ) -> None:
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"vkrama/{__version__}"
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.verify = verify  # True (certifi) or a CA bundle; never False
        self.insecure = insecure  # registries allowed plain http (see oci.base_url)
        self.on_progress = on_progress  # gets a Retry before each retry
        self.streams = streams  # connections one large file may use (store/ranges.py)

    @classmethod
    def for_settings(cls, settings: Settings, on_progress: Reporter = NULL) -> Http:
        return cls(
            retries=int(settings["models.retries"]),
            verify=ca_bundle(settings),
            insecure=tuple(settings["models.insecure_registries"]),
            on_progress=on_progress,
            streams=int(settings["models.streams"]),
        )

    def another(self) -> Http:
        """The same settings over a session of its own: one per thread of a ranged download
        (a requests.Session is not meant to be shared between threads)."""
        return Http(self.retries, self.backoff, self.timeout, self.verify, self.insecure,
                    self.on_progress)  # fmt: skip

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        what: str = "",
        stream: bool = False,
        allow_redirects: bool = True,
        ok: tuple[int, ...] = (),
    ) -> requests.Response:
        """Send with retries on transient failures; raise VkramaError on any other failure.

        Statuses in `ok` are returned to the caller instead of raised (e.g. 401 for auth).
        """
        what = what or _shown(url)
        for attempt in range(self.retries + 1):
            try:
                response = self.session.request(
                    method, url, headers=dict(headers or {}), stream=stream,
                    allow_redirects=allow_redirects, timeout=self.timeout, verify=self.verify,
                )  # fmt: skip
            except requests.exceptions.SSLError as exc:
                if untrusted(exc):  # retrying cannot help
                    raise tls_error(url) from None
                if attempt == self.retries:
                    raise network_error(what, exc) from None
                self.sleep(attempt, what, reason(exc))
                continue
            except requests.RequestException as exc:
                if attempt == self.retries:
                    raise network_error(what, exc) from None
                self.sleep(attempt, what, reason(exc))
                continue
            if response.status_code in TRANSIENT and attempt < self.retries:
                after = retry_after(response)
                response.close()
                if after is not None and after > MAX_WAIT_S:
                    raise VkramaError(
                        f"{what}: the server answered HTTP {response.status_code} and asks to"
                        f" be asked again in {after:g} s",
                        hint="pull again after that",
                        status=ExitStatus.NETWORK,
                    )
                self.sleep(attempt, what, f"HTTP {response.status_code}", after)
                continue
            if response.status_code < 400 or response.status_code in ok:
                return response
            response.close()
            raise status_error(what, response.status_code)
        raise AssertionError("unreachable")

    def speaks_tls(self, url: str) -> bool:
        """Whether `url`'s server answers over TLS (one try: a probe, not a transfer)."""
        try:
            self.session.get(url, timeout=min(self.timeout, 5.0), verify=self.verify).close()
        except requests.exceptions.SSLError as exc:
            if untrusted(exc):
                raise tls_error(url) from None
            return False  # it answered, but not in TLS
        except requests.RequestException:
            return False  # nothing there over TLS: plain http will say what is wrong
        return True

    def sleep(self, attempt: int, what: str, reason: str, after: float | None = None) -> None:
        """Wait before retry number `attempt + 1`, and say so: the backoff, jittered, or the
        server's Retry-After (`after`, seconds) where that is longer."""
        wait = min(self.backoff * 2**attempt, MAX_WAIT_S) * (1 + JITTER * random.random())
        if after is not None:
            wait = max(wait, after)
        self.on_progress(Retry(what, reason, attempt + 1, self.retries, wait))
        time.sleep(wait)


def retry_after(response: requests.Response) -> float | None:
    """The seconds a 429 or 503 asks the client to wait (Retry-After in seconds or as an
    HTTP-date), or None: another status, no such header, or one that cannot be read."""
    value = response.headers.get("Retry-After")
    if response.status_code not in RETRY_AFTER or value is None:
        return None
    try:
        return Urllib3Retry.DEFAULT.parse_retry_after(value)
    except InvalidHeader:
        return None


def json_of(response: requests.Response, kind: type[T], what: str, hint: str) -> T:
    """The answer's JSON when it is a `kind` (dict or list); otherwise a NETWORK error, as a
    server answering something else is no source to read names from."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, kind):
        shape = "a JSON object" if kind is dict else "a JSON list"
        raise VkramaError(f"{what} is not {shape}", hint=hint, status=ExitStatus.NETWORK)
    return answer


def ca_bundle(settings: Settings) -> bool | str:
    """The CA bundle to verify TLS with: models.ca_bundle, else the usual variables, else True."""
    configured = str(settings["models.ca_bundle"])
    source = f"models.ca_bundle ({settings.source('models.ca_bundle')})"
    if not configured:
        for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
            if settings.environ.get(var):
                configured, source = settings.environ[var], var
                break
    if not configured:
        return True
    path = Path(configured).expanduser()
    if not path.is_file():
        raise VkramaError(
            f"{source}: CA bundle {path} does not exist",
            hint="point it at a PEM file of the certificates to trust",
            status=ExitStatus.CONFIG,
        )
    return str(path)


def untrusted(exc: Exception) -> bool:
    return "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc)


def tls_error(url: str) -> VkramaError:
    host = urlsplit(url).netloc
    return VkramaError(
        f"{host}: its TLS certificate is not trusted",
        hint="if it is signed by a private CA, set models.ca_bundle (or REQUESTS_CA_BUNDLE)"
        " to that CA's PEM file",
        status=ExitStatus.NETWORK,
    )


def _shown(url: str) -> str:
    # Never show a query string: pre-signed URLs carry credentials there.
    return url.split("?", 1)[0]


def reason(exc: Exception) -> str:
    """What went wrong with a request or a body, in words (never its headers: they carry
    tokens): requests' own exceptions and the ConnectionLost of the bodies vkrama reads.
    The one wording of vkrama's HTTP failures: the store's and the rocm7 source fetch's."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"  # raise_for_status; the store reads statuses
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed"
    if isinstance(exc, ConnectionLost):
        return "timed out" if exc.timed_out else "connection failed or dropped"
    if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        return "connection failed or dropped"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return type(exc).__name__


def network_error(what: str, exc: Exception, have: int | None = None) -> VkramaError:
    kept = f" ({have} bytes kept; pulling again resumes)" if have else ""
    hint = "check the network or the endpoint setting, then pull again"
    if isinstance(exc, requests.exceptions.SSLError):
        hint = "a registry that speaks plain http must be listed in models.insecure_registries"
    return VkramaError(
        f"download of {what} failed: {reason(exc)}{kept}", hint=hint, status=ExitStatus.NETWORK
    )


def status_error(what: str, status: int) -> VkramaError:
    if status in (401, 403):
        return VkramaError(
            f"{what}: access denied (HTTP {status})",
            hint="log in: set HF_TOKEN for Hugging Face, or `podman login REGISTRY` for registries",
            status=ExitStatus.AUTH,
        )
    if status == 404:
        return VkramaError(
            f"{what}: not found (HTTP 404)",
            hint="check the name, tag and file; `vkrama pull --help` shows the forms",
            status=ExitStatus.NOT_FOUND,
        )
    return VkramaError(
        f"{what}: the server answered HTTP {status}",
        hint="try again later",
        status=ExitStatus.NETWORK,
    )
