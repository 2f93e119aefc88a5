"""A model split over pods: a LeaderWorkerSet (leaderworkerset.x-k8s.io/v1), its leader's
Service and a NetworkPolicy that lets only the leaders reach the workers' RPC port.

Stage: deploy (Split ─► YAML text). Pure. LeaderWorkerSet (kubernetes-sigs/lws) starts each
group as one leader pod and `size - 1` worker pods, recreated together when one fails, and
gives the workers stable names under the group's headless service: the leader's wrapper
(`split.lws_script`) finds them from the LWS_LEADER_ADDRESS and LWS_GROUP_SIZE variables
LWS puts in every pod. Workers ask for their backend's GPU as `kube.serve` does; the leader
asks for none. Must not touch the file system or the cluster.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vkrama.deploy import kube
from vkrama.deploy.files import Generated, yaml_text
from vkrama.deploy.split import HOST_MARK, PORT_MARK, Split, fill
from vkrama.engine.spec import ContainerSpec
from vkrama.serve.plan import CONTAINER_PORT

API_VERSION = "leaderworkerset.x-k8s.io/v1"
WORKER_CONTAINER = "rpc-server"
# Inside its own pod a worker listens on every address of the pod: the NetworkPolicy, not
# the bind, keeps others out (rpc-server takes IPv4 literals only, and a pod's IP is not
# known when this is written).
POD_BIND = "0.0.0.0"


def _worker_volumes(spec: ContainerSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A worker's writable places, each its pod's own: /tmp in memory, the tensor and
    compile caches on the node's disk (the tensors a leader sent are the model's size)."""
    vols: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for n, path in enumerate(spec.tmpfs):
        vols.append({"name": f"tmp{n}", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": f"tmp{n}", "mountPath": path})
    for n, mount in enumerate(spec.mounts):
        vols.append({"name": f"cache{n}", "emptyDir": {}})
        mounts.append({"name": f"cache{n}", "mountPath": mount.target})
    return vols, mounts


def serve(split: Split, out_dir: Path) -> Generated:
    work = split.leader
    leader_doc = kube.deployment(work)  # the Deployment kube.serve writes, taken apart
    name = work.name
    leader_pod = leader_doc["spec"]["template"]
    (leader,) = leader_pod["spec"]["containers"]
    # No GPU for the leader: its image's backend finds no device, every layer goes out.
    leader["resources"] = kube.resources(None, work.model_size, "1")
    for port in leader["ports"]:  # LWS does not run under `podman kube play`: no host port
        port.pop("hostPort", None)
        port.pop("hostIP", None)
    leader_pod["metadata"]["labels"]["app.kubernetes.io/component"] = "leader"

    gpu = kube.gpu_resource(work.backend, work.driver, work.gpu_kernel_driver)
    spec = split.worker
    marks = {HOST_MARK: POD_BIND, PORT_MARK: str(split.port)}
    vols, mounts = _worker_volumes(spec)
    # Each worker holds its share of the weights (and the leader sends them all in turn).
    share = math.ceil(work.model_size / split.workers)
    worker = {
        "name": WORKER_CONTAINER,
        "image": spec.image,
        "command": [fill(word, marks) for word in spec.command],
        "env": kube.env_list(spec, None),
        "ports": [{"name": "rpc", "containerPort": split.port, "protocol": "TCP"}],
        # No probe: rpc-server serves one client at a time with a backlog of one, so a
        # kubelet's TCP probe would queue behind the leader's connection and fail.
        "resources": kube.resources(gpu, share, "1", work.gpu_count),
        "securityContext": kube.container_security(spec),
        "volumeMounts": mounts,
    }
    labels = kube.app_labels(name)
    filled = {key: fill(value, marks) for key, value in spec.labels.items()}
    worker_labels = {**kube.app_labels(name, WORKER_CONTAINER), **kube.labels_ok(filled)}
    worker_pod = kube.pod_spec(spec, worker, vols)
    lws = {
        "apiVersion": API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": leader_doc["metadata"]["annotations"],
        },
        "spec": {
            "replicas": work.replicas,
            # Workers start with their leader, whose wrapper waits until each listens.
            "startupPolicy": "LeaderCreated",
            "leaderWorkerTemplate": {
                "size": split.workers + 1,
                # A lost worker takes the leader's RPC connection with it: start over.
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": leader_pod,
                "workerTemplate": {"metadata": {"labels": worker_labels}, "spec": worker_pod},
            },
        },
    }
    leaders = {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": "leader"}
    workers = {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": WORKER_CONTAINER}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": leaders,
            "ports": [{"name": "http", "port": CONTAINER_PORT, "targetPort": "http"}],
        },
    }
    # ggml's RPC has no authentication: whoever reaches a worker runs code on its devices.
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{name}-rpc", "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": workers},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": leaders}}],
                "ports": [{"protocol": "TCP", "port": split.port}],
            }],
        },
    }  # fmt: skip
    path = out_dir / f"{name}.yaml"
    header = [
        "Generated by vkrama; edit freely.",
        f"vkrama serve {work.model_ref} split over {split.workers} ggml RPC worker"
        + ("s" if split.workers > 1 else "")
        + f" ({work.spec.labels.get('vkrama.backend')}"
        + (f"/{work.driver}" if work.driver else "")
        + ")",
        "Needs LeaderWorkerSet (kubernetes-sigs/lws) in the cluster, and a network plugin",
        "that enforces NetworkPolicy: RPC has no authentication, the policy is its only guard.",
        "model: "
        + (
            f"OCI image volume {work.oci_model} (Kubernetes 1.31+ with ImageVolume)"
            if work.oci_model
            else "hostPath of this machine's file: the leader must run on a node that has it"
        ),
    ]
    if gpu:
        header.append(f"GPU: each worker asks for {work.gpu_count} {gpu} from its device plugin")
    start = []
    secret = work.secret_name if (work.spec.secret_env or work.spec.secrets) else None
    if secret:
        start.append(
            f"kubectl create secret generic {secret} --from-file={kube.SECRET_KEY}=YOUR_KEY_FILE"
        )
    start += [
        f"kubectl apply -f {path}",
        f"kubectl port-forward service/{name} {work.host_port}:{CONTAINER_PORT}",
    ]
    docs = [lws, service, policy]
    return Generated({path.name: yaml_text(docs, header)}, start)
