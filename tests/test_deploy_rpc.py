"""`vkrama serve … --generate KIND --rpc-workers N`: one model split over a leader and N ggml
RPC workers. The LeaderWorkerSet is checked against the LWS CRD's own schema (bundled from
kubernetes-sigs/lws, tests/data/lws) and its pods, Service and NetworkPolicy against
Kubernetes' OpenAPI schemas, offline; GPU hosts are fake /sys and /dev trees."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from fakesys import FakeHost, amd_dgpu_with_kfd, intel_nvidia_laptop, no_gpu
from test_deploy import K8S_VERSION
from test_devices_cli import roots

from vkrama.errors import ExitStatus

CRD = Path(__file__).parent / "data" / "lws" / "leaderworkerset.x-k8s.io_leaderworkersets.yaml"
SCRIPT_ARG = 2  # bash -c SCRIPT …


def strict(schema: Any) -> Any:
    """The schema as the API server applies it with strict field validation (kubectl's
    default): a field the schema does not know is an error, not silently pruned."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(value) for value in schema]
    return schema


@pytest.fixture(scope="module")
def lws_validator() -> jsonschema.Draft7Validator:
    crd = yaml.load(CRD.read_text(), Loader=yaml.CSafeLoader)
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(strict(v1["schema"]["openAPIV3Schema"]))


def generate(
    vkrama: Callable[..., Any], host: FakeHost, model: Path, out: Path, kind: str, *flags: str
) -> dict[str, str]:
    done = vkrama("serve", str(model), "--port", "18080", *flags, "--generate", kind,
                  "-o", str(out), env=roots(host))  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = [Path(line.removeprefix("wrote ")) for line in done.stdout.splitlines()
               if line.startswith("wrote ")]  # fmt: skip
    return {path.name: path.read_text() for path in written}


def as_pod(template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": template.get("metadata", {}),
            "spec": template["spec"]}  # fmt: skip


# (host, serve flags, the workers' device plugin resource, environment only workers get)
SPLITS = {
    "cpu-workers-ask-for-no-gpu": (no_gpu, ["--backend", "cpu"], None, {}),
    "rocm-workers-ask-amds-device-plugin": (
        amd_dgpu_with_kfd, ["--backend", "rocm"], "amd.com/gpu", {"HIP_VISIBLE_DEVICES": "0"},
    ),
    "cuda-workers-ask-nvidias-device-plugin": (
        intel_nvidia_laptop, ["--backend", "cuda"], "nvidia.com/gpu",
        {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"},
    ),
    "radv-workers-ask-amds-device-plugin-and-name-the-icd": (
        amd_dgpu_with_kfd, ["--vk-driver", "radv"], "amd.com/gpu",
        {"VK_DRIVER_FILES": "/usr/share/vulkan/icd.d/radeon_icd.json",
         "GGML_VK_VISIBLE_DEVICES": "0"},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SPLITS))
def test_kube_writes_a_leaderworkerset_valid_against_the_lws_crd(
    case: str,
    tmp_path: Path,
    tiny_model: Path,
    vkrama: Callable[..., Any],
    lws_validator: jsonschema.Draft7Validator,
) -> None:
    build, flags, resource, env = SPLITS[case]
    host = FakeHost(tmp_path / "host")
    build(host)
    files = generate(vkrama, host, tiny_model, tmp_path / "out", "kube", *flags,
                     "--rpc-workers", "3", "--replicas", "2")  # fmt: skip
    (text,) = files.values()
    lws, service, policy = yaml.safe_load_all(text)
    lws_validator.validate(lws)
    assert (lws["apiVersion"], lws["kind"]) == ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet")
    group = lws["spec"]["leaderWorkerTemplate"]
    assert (lws["spec"]["replicas"], group["size"]) == (2, 4)  # a leader and 3 workers a group
    for template in (group["leaderTemplate"], group["workerTemplate"]):
        kubernetes_validate.validate(as_pod(template), K8S_VERSION, strict=True)
    for doc in (service, policy):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)

    (leader,) = group["leaderTemplate"]["spec"]["containers"]
    (worker,) = group["workerTemplate"]["spec"]["containers"]
    assert worker["command"] == ["rpc-server", "--host", "0.0.0.0", "--port", "50052", "--cache"]
    assert worker["ports"] == [{"name": "rpc", "containerPort": 50052, "protocol": "TCP"}]
    gpus = {k: v for k, v in worker["resources"]["limits"].items() if "/" in k}
    assert gpus == ({resource: 1} if resource else {})
    # The leader holds no layer: no GPU, none of the backend's device selection.
    assert [k for k in leader["resources"]["limits"] if "/" in k] == []
    leader_env = {e["name"] for e in leader["env"]}
    assert env.items() <= {e["name"]: e.get("value") for e in worker["env"]}.items()
    assert not leader_env & env.keys()
    # No host device path reaches a cluster: the device plugin hands the GPU over.
    assert not [word for word in ("/dev/dri", "/dev/kfd", "/dev/nvidia") if word in text]
    assert leader["command"][:2] == ["bash", "-c"]
    served = leader["command"][leader["command"].index("llama-server") :]
    assert served[served.index("--n-gpu-layers") + 1] == "999"  # every layer to the workers
    model_mounts = [m for m in leader["volumeMounts"] if m["mountPath"].startswith("/models/")]
    assert model_mounts and all(m["readOnly"] for m in model_mounts)
    hardened = {
        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
        "allowPrivilegeEscalation": False, "privileged": False,
        "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"},
        "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    assert leader["securityContext"] == worker["securityContext"] == hardened

    # Only the leaders reach the workers' RPC port; the Service is the leaders' only.
    leaders = group["leaderTemplate"]["metadata"]["labels"]
    workers = group["workerTemplate"]["metadata"]["labels"]
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["podSelector"]["matchLabels"].items() <= workers.items()
    assert not spec["podSelector"]["matchLabels"].items() <= leaders.items()
    (rule,) = spec["ingress"]
    ((source,),) = [rule["from"]]
    assert source["podSelector"]["matchLabels"].items() <= leaders.items()
    assert not source["podSelector"]["matchLabels"].items() <= workers.items()
    assert rule["ports"] == [{"protocol": "TCP", "port": 50052}]
    assert service["spec"]["selector"].items() <= leaders.items()
    assert not service["spec"]["selector"].items() <= workers.items()


def test_the_crd_check_can_fail(
    tmp_path: Path,
    tiny_model: Path,
    vkrama: Callable[..., Any],
    lws_validator: jsonschema.Draft7Validator,
) -> None:
    host = FakeHost(tmp_path / "host")
    files = generate(vkrama, host, tiny_model, tmp_path / "out", "kube", "--backend", "cpu",
                     "--rpc-workers", "1")  # fmt: skip
    lws = next(yaml.safe_load_all(next(iter(files.values()))))
    lws_validator.validate(lws)
    for path, value in [
        (("spec", "leaderWorkerTemplate", "restartPolicy"), "Always"),  # not in the enum
        (("spec", "leaderWorkerTemplate", "size"), "2"),  # a string
        (("spec", "leaderWorkerTemplate", "workers"), 1),  # no such field
    ]:
        bad = copy.deepcopy(lws)
        parent = bad
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            lws_validator.validate(bad)


def test_the_leader_names_the_workers_as_lws_does_under_its_headless_service(
    tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    """LWS's reference: LWS_LEADER_ADDRESS is LEADER.SUBDOMAIN.NAMESPACE and worker i of the
    group is the pod LEADER-i under the same subdomain (LWS docs, its llama.cpp example)."""
    host = FakeHost(tmp_path / "host")
    files = generate(vkrama, host, tiny_model, tmp_path / "out", "kube", "--backend", "cpu",
                     "--rpc-workers", "2")  # fmt: skip
    lws = next(yaml.safe_load_all(next(iter(files.values()))))
    (leader,) = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"]
    script = leader["command"][SCRIPT_ARG]
    derive, _, _ = script.partition("; for worker in")
    done = subprocess.run(
        ["bash", "-c", f'{derive}; echo "$workers"'],
        env={"LWS_LEADER_ADDRESS": "vkrama-tiny-18080-1.vkrama-tiny-18080.prod",
             "LWS_GROUP_SIZE": "3"},
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == (
        "vkrama-tiny-18080-1-1.vkrama-tiny-18080.prod:50052,"
        "vkrama-tiny-18080-1-2.vkrama-tiny-18080.prod:50052"
    )


def test_the_leader_waits_for_each_worker_then_starts_with_them(
    tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    """The two-host leader's wrapper, run by a real bash: it returns only once both
    addresses accept connections, and hands them to the server as --rpc."""
    import socket

    host = FakeHost(tmp_path / "host")
    files = generate(vkrama, host, tiny_model, tmp_path / "out", "compose", "--backend", "cpu",
                     "--rpc-workers", "2")  # fmt: skip
    leader = yaml.safe_load(files["vkrama-tiny-18080.compose.yaml"])
    command = leader["services"]["vkrama-tiny-18080"]["command"]
    script = command[SCRIPT_ARG].replace("$$", "$")  # as compose hands it over
    with socket.socket() as one, socket.socket() as two:
        for listener in (one, two):
            listener.bind(("127.0.0.1", 0))
        addresses = ",".join(f"127.0.0.1:{s.getsockname()[1]}" for s in (one, two))
        one.listen()
        argv = ["bash", "-c", script, "leader", addresses, "echo", "serve"]
        waiting = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # It polls the second address, which does not listen yet, and says so.
            assert waiting.stderr is not None
            line = waiting.stderr.readline()
            assert line.strip().endswith(f"waiting for rpc-server at {addresses.split(',')[1]}")
            assert waiting.poll() is None
            two.listen()
            out, _ = waiting.communicate(timeout=60)
        finally:
            waiting.kill()
    assert waiting.returncode == 0
    assert out.strip() == f"serve --rpc {addresses}"
    unset = subprocess.run(["bash", "-c", script, "leader", "", "echo"], capture_output=True,
                           text=True, timeout=30)  # fmt: skip
    assert unset.returncode != 0
    assert "set VKRAMA_RPC_WORKERS to the workers as HOST:PORT,HOST:PORT" in unset.stderr


def test_compose_and_quadlet_write_a_leader_and_a_worker_that_binds_loopback_unless_set(
    tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path / "host")
    amd_dgpu_with_kfd(host)
    out = tmp_path / "out"
    composed = generate(vkrama, host, tiny_model, out, "compose", "--backend", "rocm",
                        "--rpc-workers", "2")  # fmt: skip
    assert sorted(composed) == ["vkrama-tiny-18080-rpc-worker.compose.yaml",
                                "vkrama-tiny-18080.compose.yaml"]  # fmt: skip
    worker_text = composed["vkrama-tiny-18080-rpc-worker.compose.yaml"]
    assert "WARNING: ggml's RPC has no authentication" in worker_text
    worker = yaml.safe_load(worker_text)["services"]["vkrama-tiny-18080-rpc-worker"]
    assert worker["command"] == ["rpc-server", "--host", "${VKRAMA_RPC_HOST:-127.0.0.1}",
                                 "--port", "${VKRAMA_RPC_PORT:-50052}", "--cache"]  # fmt: skip
    # The GPU is the worker's; the leader gets none of it.
    assert worker["devices"] == ["/dev/dri/renderD128", "/dev/kfd"]
    assert worker["environment"]["HIP_VISIBLE_DEVICES"] == "0"
    assert (worker["network_mode"], worker["read_only"], worker["cap_drop"], worker["user"]) == (
        "host", True, ["ALL"], "1000:1000")  # fmt: skip
    assert worker["security_opt"] == ["no-new-privileges:true"]
    assert "ports" not in worker
    leader = yaml.safe_load(composed["vkrama-tiny-18080.compose.yaml"])["services"][
        "vkrama-tiny-18080"
    ]
    assert "devices" not in leader and "HIP_VISIBLE_DEVICES" not in leader["environment"]
    assert leader["network_mode"] == "host"
    assert "${VKRAMA_RPC_WORKERS:?set VKRAMA_RPC_WORKERS" in leader["command"][4]
    assert [v["read_only"] for v in leader["volumes"]] == [True]

    units = generate(vkrama, host, tiny_model, out, "quadlet", "--backend", "rocm",
                     "--rpc-workers", "2")  # fmt: skip
    worker_unit = units["vkrama-tiny-18080-rpc-worker.container"].splitlines()
    assert "# WARNING: ggml's RPC has no authentication and no encryption: whoever reaches " \
        "this port" in worker_unit  # fmt: skip
    for wanted in ("Exec=rpc-server --host ${VKRAMA_RPC_HOST} --port ${VKRAMA_RPC_PORT} --cache",
                   "Environment=VKRAMA_RPC_HOST=127.0.0.1", "Environment=VKRAMA_RPC_PORT=50052",
                   "Network=host", "AddDevice=/dev/kfd", "DropCapability=all",
                   "NoNewPrivileges=true", "ReadOnly=true", "User=1000"):  # fmt: skip
        assert wanted in worker_unit
    leader_unit = units["vkrama-tiny-18080.container"].splitlines()
    assert "Environment=VKRAMA_RPC_WORKERS=" in leader_unit
    assert not [line for line in leader_unit if line.startswith("AddDevice=")]


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--rpc-workers", "2"], "Error: --rpc-workers means something only with --generate"),
        (["--rpc-workers", "2", "--generate", "kube", "--rpc", "127.0.0.1:50052"],
         "Error: --rpc-workers writes the workers; --rpc names running ones"),
        (["--rpc-workers", "0", "--generate", "kube"], "Invalid value for '--rpc-workers'"),
    ],
    ids=["without-generate", "with-rpc", "zero"],
)  # fmt: skip
def test_rpc_workers_misuse_is_a_usage_error_and_writes_nothing(
    flags: list[str], says: str, tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    out = tmp_path / "out"
    if "--generate" in flags:
        flags = [*flags, "-o", str(out)]
    done = vkrama("serve", str(tiny_model), "--backend", "cpu", *flags,
                  env=roots(FakeHost(tmp_path / "h")))  # fmt: skip
    assert done.returncode == ExitStatus.USAGE, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()
