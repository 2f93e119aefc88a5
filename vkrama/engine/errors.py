"""Where podman-py's and the transport's exceptions become one-line `VkramaError`s.

Stage: engine, at its boundary: every call into podman-py runs inside `translate_errors`,
so no later stage sees a podman or requests exception. Must not print.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import requests
import urllib3
from podman import errors as podman_errors

from vkrama.errors import ExitStatus, VkramaError


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn podman-py and transport failures into one-line vkrama errors."""
    try:
        yield
    except podman_errors.ImageNotFound as error:
        raise VkramaError(
            f"{what}: image not found: {_explanation(error)}",
            hint="build it with `vkrama images build BACKEND`",
            status=ExitStatus.IMAGE_UNAVAILABLE,
        ) from error
    except podman_errors.NotFound as error:
        raise VkramaError(f"{what}: {_explanation(error)}", status=ExitStatus.NOT_FOUND) from error
    except podman_errors.APIError as error:
        # podman-py wraps a failed transport (requests' exceptions) in an APIError.
        if isinstance(error.__cause__, requests.RequestException):
            raise _transport_error(what, error.__cause__) from error
        # A container removed while it is inspected comes back as a 500 with this text,
        # not a 404: it is gone all the same.
        gone = "no such container" in _explanation(error)
        status = ExitStatus.NOT_FOUND if gone else ExitStatus.ERROR
        raise VkramaError(f"{what}: {_explanation(error)}", status=status) from error
    except (requests.RequestException, podman_errors.PodmanError) as error:
        raise _transport_error(what, error) from error
    except urllib3.exceptions.HTTPError as error:
        # A streamed body (a followed log) is read past requests: a service that dies
        # mid-stream surfaces as urllib3's own ProtocolError (IncompleteRead).
        raise _transport_error(what, error) from error


def _transport_error(what: str, error: Exception) -> VkramaError:
    # A read timeout is podman taking its time (a wait that outlasts its timeout); a
    # connect timeout, like a refused or reset connection, means podman is gone.
    if isinstance(error, requests.Timeout) and not isinstance(error, requests.ConnectionError):
        return VkramaError(f"{what}: timed out", status=ExitStatus.TIMEOUT)
    return VkramaError(
        f"{what}: lost the connection to podman ({error.__class__.__name__})",
        hint="is the podman service still running? `podman info` checks it",
        status=ExitStatus.ENGINE_UNAVAILABLE,
    )


def _explanation(error: Exception) -> str:
    text = getattr(error, "explanation", None) or str(error)
    return " ".join(str(text).split())
