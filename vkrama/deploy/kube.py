"""Kubernetes manifests for a planned server (Deployment + Service) and pod specs for Jobs.

Stage: deploy (Workload ─► YAML text). Pure. GPUs are asked for by the device plugins'
extended resource names, never by host device paths: a cluster's scheduler only knows the
former. Must not touch the file system or the cluster.

The model reaches the pod in one of two ways:
- an `oci://` model is an OCI image volume (Kubernetes ImageVolume, 1.31+): the kubelet
  pulls it with the node's registry credentials and caches it like any image, so replicas
  on many nodes need no copy step and no init container;
- any other model is a read-only hostPath of the file in vkrama's store on this machine:
  the single-node form (`podman kube play`, or a node where `vkrama pull` ran with the same
  VKRAMA_HOME), which also publishes the port on the host like `vkrama serve` does.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from vkrama.backends import SYCL_CPU
from vkrama.deploy.files import Generated, yaml_text
from vkrama.deploy.workloads import HEALTH_PATH, Workload, writable_sources
from vkrama.engine.spec import ContainerSpec
from vkrama.errors import ExitStatus, VkramaError
from vkrama.serve.plan import CONTAINER_PORT, MODEL_DIR

MIB = 1024 * 1024
# llama.cpp's KV cache, compute buffers and runtime on top of the weights it maps.
MEMORY_OVERHEAD = 512 * MIB
SECRET_KEY = "api-key"
CONTAINER = "llama-server"
# What the API server accepts as a label value.
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def gpu_resource(backend: str, driver: str | None, kernel_driver: str | None) -> str | None:
    """The device plugin's resource that gives a pod this backend's GPU; None for CPU work."""
    if backend == "cpu" or driver in ("lavapipe", SYCL_CPU):
        return None  # software devices: lavapipe, the SYCL CPU device
    if backend == "cuda" or driver == "nvidia":
        return "nvidia.com/gpu"  # NVIDIA's device plugin (GPU operator)
    if backend == "rocm" or driver == "radv":
        return "amd.com/gpu"  # AMD's device plugin: /dev/kfd and the GPU's render node
    if backend == "oneapi" or driver == "anv":
        # Intel's device plugin names the resource after the kernel driver.
        return "gpu.intel.com/xe" if kernel_driver == "xe" else "gpu.intel.com/i915"
    raise VkramaError(
        f"no Kubernetes device plugin hands out {backend}/{driver} GPUs",
        hint="use --generate quadlet or compose for this GPU, or --backend cpu",
        status=ExitStatus.BACKEND_UNAVAILABLE,
    )


def mebibytes(size: int) -> str:
    return f"{math.ceil(size / MIB)}Mi"


def labels_ok(labels: dict[str, str]) -> dict[str, str]:
    """The `vkrama.*` labels whose values Kubernetes accepts as label values (short words);
    the others (URLs, names with spaces) are kept as annotations only."""
    return {k: v for k, v in labels.items() if len(v) <= 63 and _LABEL_VALUE.match(v)}


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security(spec: ContainerSpec) -> dict[str, Any]:
    """The container's hardening, taken from the spec (which `vkrama serve` runs with)."""
    user, _, group = (spec.user or "1000:1000").partition(":")
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": int(user),
        "runAsGroup": int(group or user),
        "allowPrivilegeEscalation": not spec.no_new_privileges,
        "privileged": False,
        "readOnlyRootFilesystem": spec.read_only_rootfs,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if spec.cap_drop_all:
        context["capabilities"] = {"drop": ["ALL"]}
    return context


def env_list(
    spec: ContainerSpec, secret: str | None, extra: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The spec's environment; secret values come from the Secret `secret`, never inline."""
    env: list[dict[str, Any]] = []
    for key, value in sorted(spec.env.items()):
        if key in spec.secret_env:
            ref = {"name": secret, "key": SECRET_KEY}
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
        else:
            env.append({"name": key, "value": value})
    for key, source in (extra or {}).items():
        env.append({"name": key, **source})
    return env


def volumes(
    spec: ContainerSpec, oci_model: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts) for the spec's tmpfs and bind mounts."""
    vols: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for n, path in enumerate(spec.tmpfs):
        vols.append({"name": f"tmp{n}", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": f"tmp{n}", "mountPath": path})
    if oci_model is not None:
        vols.append({"name": "model", "image": {"reference": oci_model,
                                                "pullPolicy": "IfNotPresent"}})  # fmt: skip
        mounts.append({"name": "model", "mountPath": MODEL_DIR, "readOnly": True})
    for n, mount in enumerate(spec.mounts):
        is_model = mount.target.startswith(f"{MODEL_DIR}/")
        if is_model and oci_model is not None:
            continue
        name = f"model{n}" if is_model else f"cache{n}"
        if not mount.read_only and oci_model is not None:
            source: dict[str, Any] = {"emptyDir": {}}  # a node's compile cache, per pod
        elif mount.read_only:
            source = {"hostPath": {"path": str(mount.source), "type": "File"}}
        else:
            source = {"hostPath": {"path": str(mount.source), "type": "DirectoryOrCreate"}}
        vols.append({"name": name, **source})
        mounts.append({"name": name, "mountPath": mount.target, "readOnly": mount.read_only})
    return vols, mounts


def resources(gpu: str | None, model_size: int, cpu: str, gpus: int = 1) -> dict[str, Any]:
    # The limit leaves room above the request for the Vulkan/LLVM shader compilers and
    # a larger context than the default; the request is what the scheduler must find free.
    need = model_size + MEMORY_OVERHEAD  # the weights plus llama.cpp's own buffers
    memory = mebibytes(need)
    limits: dict[str, Any] = {"memory": mebibytes(2 * need)}
    if gpu:
        limits[gpu] = gpus  # extended resources go in limits; requests default to them
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}


def app_labels(name: str, component: str = "server") -> dict[str, str]:
    """The labels every object of one generated server carries (selectors match them)."""
    return {
        "app.kubernetes.io/name": "vkrama",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
    }


def pod_spec(
    spec: ContainerSpec, container: dict[str, Any], vols: list[dict[str, Any]]
) -> dict[str, Any]:
    """A pod of one container of `spec`'s: no service account token, the runtime's
    seccomp profile, and the groups that own its devices."""
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": vols,
    }
    if spec.group_add:
        # The render node's group on the machine this was generated on; device plugins
        # usually make the node accessible, other nodes may number the group differently.
        pod["securityContext"]["supplementalGroups"] = [int(g) for g in spec.group_add]
    return pod


def deployment(work: Workload) -> dict[str, Any]:
    """The Deployment of the server `vkrama serve` would start (`lws` takes its pod)."""
    spec, name = work.spec, work.name
    gpu = gpu_resource(work.backend, work.driver, work.gpu_kernel_driver)
    single_node = work.oci_model is None
    secret = work.secret_name if (spec.secret_env or spec.secrets) else None
    labels = app_labels(name)
    pod_labels = {**labels, **labels_ok(work.labels)}
    if single_node:
        # `vkrama ps` builds the URL from this where the full one cannot be a label value.
        pod_labels["vkrama.port"] = str(work.host_port)
    vols, mounts = volumes(spec, work.oci_model)
    for n, file in enumerate(spec.secrets):
        # Mode 0440 and the pod's fsGroup: secret files are root's, the server is not.
        source = {"secretName": secret, "defaultMode": 0o440}
        vols.append({"name": f"secret{n}", "secret": source})
        mounts.append({"name": f"secret{n}", "mountPath": file.target, "subPath": SECRET_KEY,
                       "readOnly": True})  # fmt: skip
    port: dict[str, Any] = {"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}
    if single_node:
        port.update(hostPort=work.host_port, hostIP=work.host)
    probe = {"httpGet": {"path": HEALTH_PATH, "port": "http"}}
    container = {
        "name": CONTAINER,
        "image": spec.image,
        "command": list(spec.command),
        "env": env_list(spec, secret),
        "ports": [port],
        # Loading a large model takes minutes; until it is up the other probes wait.
        "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 180},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {
            **probe,
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": resources(gpu, work.model_size, "1", work.gpu_count),
        "securityContext": container_security(spec),
        "volumeMounts": mounts,
    }
    pod = pod_spec(spec, container, vols)
    if spec.secrets:
        pod["securityContext"]["fsGroup"] = spec.secrets[0].gid
    annotations = {key: value for key, value in sorted(work.labels.items())}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": work.replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": annotations},
                "spec": pod,
            },
        },
    }


def serve(work: Workload, out_dir: Path) -> Generated:
    """A Deployment and a Service for the server `vkrama serve` would start."""
    spec, name = work.spec, work.name
    gpu = gpu_resource(work.backend, work.driver, work.gpu_kernel_driver)
    single_node = work.oci_model is None
    secret = work.secret_name if (spec.secret_env or spec.secrets) else None
    labels = app_labels(name)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": {"app.kubernetes.io/instance": name},
            "ports": [{"name": "http", "port": CONTAINER_PORT, "targetPort": "http"}],
        },
    }
    path = out_dir / f"{name}.yaml"
    header = [
        f"vkrama serve {work.model_ref}: {spec.labels.get('vkrama.backend')}"
        + (f"/{work.driver}" if work.driver else "")
        + f" on {spec.labels.get('vkrama.device')}",
        "model: "
        + (
            f"OCI image volume {work.oci_model} (Kubernetes 1.31+ with ImageVolume)"
            if work.oci_model
            else "hostPath of this machine's file (single node; clusters: vkrama's docs/deploy.md)"
        ),
    ]
    if gpu:
        header.append(f"GPU: one {gpu} from its device plugin")
    start = []
    if secret:
        start.append(
            f"kubectl create secret generic {secret} --from-file={SECRET_KEY}=YOUR_KEY_FILE"
        )
    start += [
        f"kubectl apply -f {path}",
        f"kubectl port-forward service/{name} {work.host_port}:{CONTAINER_PORT}",
    ]
    if single_node:
        start += [f"podman kube play {path}   # single node; `podman kube down {path}` stops"]
    header.insert(0, "Generated by vkrama; edit freely.")
    # On this machine the compile cache is made writable for the pod's user, as serve does.
    dirs = writable_sources(spec) if single_node else ()
    return Generated({path.name: yaml_text([deployment(work), service], header)}, start, dirs)
