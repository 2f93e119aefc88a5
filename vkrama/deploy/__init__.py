"""The deploy stage: hand the serve plan to the engines people already run.

Modules: `workloads` (the `Workload` a serve plan becomes, its name and health check),
`files` (`Generated`, YAML text, `write`: each file whole or none), `generate` (`for_serve`,
`render`: one kind's files), `kube`, `quadlet`, `compose` (one renderer each), `split` (a
model split over a leader and ggml RPC workers, `--rpc-workers`), `lws` (that split as a
Kubernetes LeaderWorkerSet), `fleet` (a bench run as Kubernetes Jobs, one per node). Must
not start containers, talk to podman or print. This file only re-exports.
"""

from vkrama.deploy.files import Generated, write, yaml_text
from vkrama.deploy.generate import KINDS, for_serve, render
from vkrama.deploy.workloads import Workload, dns_label, workload

__all__ = [
    "KINDS",
    "Generated",
    "Workload",
    "dns_label",
    "for_serve",
    "render",
    "workload",
    "write",
    "yaml_text",
]
