"""Fleet bench: the bench matrix as Kubernetes Jobs, one per cell, whose logs are run records.

Stage: deploy (BenchPlan ─► YAML text). Pure. Each Job runs the cell's exact llama-bench
command (the one `vkrama bench` runs in podman) in the backend's image on whichever node
the device plugin's resource lands it, then prints one JSON record on stdout: the cell as
planned, the node, its kernel, the image's provenance file and llama-bench's stdout and
stderr (base64). The images carry no vkrama, so the record is judged where it is
imported: `vkrama results import` runs the same checks `vkrama bench` does (`bench.run.judge`)
and stores the run under the node's name. Must not touch the file system or a cluster.

podman before 5.3 cannot play a Job, so the same pod specs are also written as bare Pods,
one file per cell (`….pod.yaml`), for `podman kube play` on a single machine.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vkrama.bench.imports import FLEET_KEY, FLEET_VERSION
from vkrama.deploy import kube
from vkrama.deploy.files import Generated, yaml_text
from vkrama.deploy.workloads import dns_label, writable_sources
from vkrama.images.provenance import PROVENANCE_PATH

if TYPE_CHECKING:
    from vkrama.bench.plan import BenchCell
    from vkrama.bench.session import BenchPlan
    from vkrama.results import RunInfo

# POSIX sh (the images' /bin/sh is dash): run llama-bench, then print the record. Every
# value that is not ours (llama-bench's output, its stderr) travels base64-encoded, so the
# record is valid JSON whatever they contain; the provenance file (JSON, whose strings hold
# no raw newlines) is folded onto the record's one line.
SCRIPT = r"""
out=/tmp/vkrama-bench.out; err=/tmp/vkrama-bench.err
started=$(date +%s)
"$@" >"$out" 2>"$err"; code=$?
ended=$(date +%s)
node=${VKRAMA_NODE:-$(cat /proc/sys/kernel/hostname)}
printf '{"%s":%d,"cell":%s,"node":"%s","kernel":"%s","exit_code":%d,"duration_s":%d,' \
  "$FLEET_KEY" "$FLEET_VERSION" "$VKRAMA_CELL" "$node" "$(uname -r)" "$code" \
  "$((ended - started))"
printf '"provenance":'
tr -d '\n' <"$PROVENANCE" 2>/dev/null || printf 'null'
printf ',"stdout_b64":"%s","stderr_b64":"%s"}\n' "$(base64 -w0 "$out")" "$(base64 -w0 "$err")"
exit "$code"
""".strip()


def cell_record(plan: BenchPlan, info: RunInfo, token: str, cell: BenchCell) -> dict[str, Any]:
    """What the Job knows before it runs: the cell as planned here and the run's header."""
    gpu = next((g for g in info.gpus if g.get("index") == cell.gpu_index), None)
    return {
        "run": token,
        "backend": cell.backend,
        "driver": cell.driver,
        "device": cell.device,
        "image": cell.image,
        "command": list(cell.spec.command),
        "gpus": [gpu] if gpu else [],
        "gpu_key": gpu["ids"] if gpu else "none",
        "model_name": info.model_name,
        "model_sha256": info.model_sha256,
        "params": info.params,
        "vkrama_version": info.vkrama_version,
        "flash_attn_varied": bool(plan.request.params.flash_attn),
        # Repetitions the command runs cold and the import does not count (vulkan cells).
        **({"cold_reps": cell.cold_reps} if cell.cold_reps else {}),
    }


def pod_spec(
    plan: BenchPlan, info: RunInfo, token: str, cell: BenchCell, oci_model: str | None, node: Any
) -> dict[str, Any]:
    """One cell's pod; `node` is how the pod learns its node's name (an env source)."""
    spec = cell.spec
    gpu_kernel = next(
        (g.kernel_driver for g in plan.profile.gpus if g.index == cell.gpu_index), None
    )
    gpu = kube.gpu_resource(cell.backend, cell.driver, gpu_kernel)
    vols, mounts = kube.volumes(spec, oci_model)
    extra = {
        "VKRAMA_CELL": {"value": json.dumps(cell_record(plan, info, token, cell))},
        "VKRAMA_NODE": node,
        "FLEET_KEY": {"value": FLEET_KEY},
        "FLEET_VERSION": {"value": str(FLEET_VERSION)},
        "PROVENANCE": {"value": PROVENANCE_PATH},
    }
    container = {
        "name": "llama-bench",
        "image": spec.image,
        "command": ["sh", "-c", SCRIPT, "vkrama-fleet", *spec.command],
        "env": kube.env_list(spec, None, extra),
        # A cell measures the node: it asks for the threads it runs and is never squeezed.
        "resources": kube.resources(gpu, plan.model.size, str(plan.threads)),
        "securityContext": kube.container_security(spec),
        "volumeMounts": mounts,
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": kube.pod_security(),
        "containers": [container],
        "volumes": vols,
    }
    if spec.group_add:
        pod["securityContext"]["supplementalGroups"] = [int(g) for g in spec.group_add]
    return pod


def jobs(plan: BenchPlan, info: RunInfo, token: str, model_ref: str, out_dir: Path) -> Generated:
    """A Job per cell (and the same pods bare, for podman); how to run and collect them."""
    oci_model = model_ref.removeprefix("oci://") if plan.model.source == "oci" else None
    base = dns_label(f"vkrama-bench-{token}")
    labels = {"app.kubernetes.io/name": "vkrama", "vkrama.fleet": token}
    job_docs: list[dict[str, Any]] = []
    pod_docs: list[dict[str, Any]] = []
    for position, cell in enumerate(plan.cells):
        name = dns_label(f"{base}-{position}-{cell.key.replace('/', '-')}")
        # The downward API names the node in a cluster; podman 4 knows no spec.nodeName,
        # and its pods run here.
        in_cluster = {"valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
        here = {"value": socket.gethostname()}
        job_pod = pod_spec(plan, info, token, cell, oci_model, in_cluster)
        # Cells of one run never share a node at the same time; they queue instead.
        apart = {"labelSelector": {"matchLabels": {"vkrama.fleet": token}},
                 "topologyKey": "kubernetes.io/hostname"}  # fmt: skip
        job_pod["affinity"] = {
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [apart]}
        }
        job_docs.append({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "backoffLimit": 0,  # a failed cell is a result, not something to retry
                "ttlSecondsAfterFinished": 86400,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": job_pod,
                },
            },
        })  # fmt: skip
        pod_docs.append({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": pod_spec(plan, info, token, cell, oci_model, here),
        })  # fmt: skip
    header = [
        f"Generated by vkrama: vkrama bench {model_ref} as {len(job_docs)} Job(s), one per cell",
        "Each prints one JSON record on stdout; `vkrama results import` stores it.",
    ]
    jobs_file = f"{base}.yaml"
    files = {jobs_file: yaml_text(job_docs, header)}
    start = [
        f"kubectl apply -f {out_dir / jobs_file}",
        f"kubectl wait --for=condition=complete --timeout=1h job -l vkrama.fleet={token}",
        f"kubectl logs -l vkrama.fleet={token} --tail=-1 | vkrama results import -",
    ]
    if oci_model is None:
        # One file per cell: `podman kube play` starts every pod of a file at once, and
        # two cells on one machine would measure each other.
        names = [doc["metadata"]["name"] for doc in pod_docs]
        for doc in pod_docs:
            files[f"{doc['metadata']['name']}.pod.yaml"] = yaml_text(
                [doc], [*header, "A bare Pod for `podman kube play` (podman < 5.3 has no Job)."]
            )
        start += [
            "# single node with podman, one cell after another:",
            f"for pod in {' '.join(names)}; do podman kube play {out_dir}/$pod.pod.yaml "
            ">/dev/null && podman wait $pod-llama-bench >/dev/null; podman logs "
            f"$pod-llama-bench; podman kube down {out_dir}/$pod.pod.yaml >/dev/null; "
            "done | vkrama results import -",
        ]
    dirs = () if oci_model else tuple(d for c in plan.cells for d in writable_sources(c.spec))
    return Generated(files, start, tuple(dict.fromkeys(dirs)))
