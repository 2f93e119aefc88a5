"""The RPC leader's and worker's plans (pure) and the `--rpc` addresses, as specs."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_server import LAVAPIPE, flag_value, request

from vkrama.backends import compile_cache
from vkrama.errors import ExitStatus, VkramaError
from vkrama.serve import plan as server
from vkrama.serve import rpc


def test_a_leader_takes_its_workers_and_puts_every_layer_on_them_even_from_the_cpu_image() -> None:
    spec = server.plan(*request(rpc=("127.0.0.1:50052", "10.0.0.2:50053"), host="127.0.0.1"))
    command = list(spec.command)
    assert flag_value(command, "--rpc") == "127.0.0.1:50052,10.0.0.2:50053"
    assert flag_value(command, "--n-gpu-layers") == "999"
    # It shares the host's network to reach workers on loopback, so it listens itself on the
    # asked address and port instead of publishing a container port.
    assert spec.network == "host" and spec.ports == ()
    assert (flag_value(command, "--host"), flag_value(command, "--port")) == ("127.0.0.1", "8099")
    assert spec.labels["vkrama.rpc"] == "127.0.0.1:50052,10.0.0.2:50053"
    assert spec.user == "1000:1000" and spec.cap_drop_all and spec.no_new_privileges


def test_a_server_without_workers_is_planned_as_before() -> None:
    spec = server.plan(*request())
    assert spec.network is None and "--rpc" not in spec.command and "vkrama.rpc" not in spec.labels


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("127.0.0.1:50052", ["127.0.0.1:50052"], id="one"),
        pytest.param("127.0.0.1:1, localhost:65535", ["127.0.0.1:1", "localhost:65535"],
                     id="two-with-a-space"),
        pytest.param("[::1]:50052", ["[::1]:50052"], id="ipv6-in-brackets"),
    ],
)  # fmt: skip
def test_rpc_addresses(text: str, expected: list[str]) -> None:
    assert [str(e) for e in rpc.parse_endpoints(text)] == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param("127.0.0.1", "is not HOST:PORT", id="no-port"),
        pytest.param("127.0.0.1:0", "is not HOST:PORT", id="port-0"),
        pytest.param("127.0.0.1:65536", "is not HOST:PORT", id="port-too-big"),
        pytest.param(":50052", "is not HOST:PORT", id="no-host"),
        pytest.param("127.0.0.1:50052,", "is not HOST:PORT", id="empty-item"),
        pytest.param("[::1]", "is not HOST:PORT", id="ipv6-without-port"),
        pytest.param("no-such-host.invalid:1", "does not resolve", id="unresolvable"),
        pytest.param("127.0.0.1:1,127.0.0.1:1", "names a worker twice", id="twice"),
    ],
)  # fmt: skip
def test_bad_rpc_addresses_are_usage_errors(text: str, says: str) -> None:
    with pytest.raises(VkramaError, match=says) as caught:
        rpc.parse_endpoints(text)
    assert caught.value.status == ExitStatus.USAGE


def test_a_worker_gets_serves_devices_and_env_its_tensor_cache_and_no_published_port(
    tmp_path: Path,
) -> None:
    caches = (rpc.tensor_cache(tmp_path), compile_cache.for_backend(tmp_path, "vulkan", "lavapipe"))
    asked = rpc.WorkerRequest(backend="vulkan", host="127.0.0.1", port=50100)
    planned = rpc.plan_worker(asked, LAVAPIPE, "localhost/vkrama/vulkan:latest",
                              tuple(c for c in caches if c))  # fmt: skip
    spec = planned.spec
    assert spec.command == ("rpc-server", "--host", "127.0.0.1", "--port", "50100", "--cache")
    assert spec.devices == LAVAPIPE.devices and spec.group_add == LAVAPIPE.group_add
    assert spec.env["GGML_VK_VISIBLE_DEVICES"] == "0"
    assert spec.env["LLAMA_CACHE"] == "/cache/rpc"
    assert {(m.source, m.target, m.read_only) for m in spec.mounts} >= {
        (tmp_path / "cache" / "rpc", "/cache/rpc", False)
    }
    assert spec.network == "host" and spec.ports == ()
    assert spec.read_only_rootfs and spec.cap_drop_all and spec.user == "1000:1000"
    assert spec.labels["vkrama.role"] == "rpc-worker"
    assert spec.labels["vkrama.url"] == "rpc://127.0.0.1:50100"
    assert spec.name == "vkrama-rpc-vulkan-50100"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("10.0.0.2", False), ("::", False), ("worker.lan", False)],
)  # fmt: skip
def test_only_loopback_binds_go_without_the_warning(host: str, loopback: bool) -> None:
    assert rpc.is_loopback(host) is loopback


def test_a_worker_nobody_listens_on_is_named_in_one_network_error() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(VkramaError) as caught:
        rpc.check_reachable([rpc.Endpoint("127.0.0.1", port)])
    assert caught.value.status == ExitStatus.NETWORK
    assert caught.value.message == f"RPC worker not reachable: 127.0.0.1:{port}"
