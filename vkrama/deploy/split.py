"""`--generate … --rpc-workers N`: one model split over a leader and N ggml RPC workers.

Stage: deploy, after serve.plan and serve.rpc. `plan` plans what `vkrama serve` would run
(starting nothing): the backend, image and model it picks belong to the workers, which
hold every layer (`rpc-server` with that backend's devices, planned by `serve.rpc` as
`vkrama rpc-worker` runs it); the leader runs llama-server in the same image, so every
part is one llama.cpp build speaking one RPC protocol, with no device of its own. Must not
start containers, talk to podman or print.

Where the workers are is known only where the files run, so the planned commands carry
marks each renderer writes in its own syntax: LeaderWorkerSet's environment in Kubernetes,
a variable the user sets in compose and quadlet. The RPC protocol has no authentication
(llama.cpp's README): the worker binds an address given explicitly, loopback unless set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vkrama.backends import ALL_LAYERS, compile_cache
from vkrama.deploy.workloads import Workload, workload
from vkrama.engine.spec import ContainerSpec
from vkrama.errors import ExitStatus, VkramaError
from vkrama.llama_flags import FLAG
from vkrama.progress import NULL, Reporter

if TYPE_CHECKING:
    from vkrama.config import Settings
    from vkrama.serve.plan import ServeRequest

# The variables a user sets where the two-host files run (compose, quadlet).
WORKERS_VAR = "VKRAMA_RPC_WORKERS"  # on the leader's host: HOST:PORT,... of the workers
HOST_VAR = "VKRAMA_RPC_HOST"  # on a worker's host: the address rpc-server binds
PORT_VAR = "VKRAMA_RPC_PORT"
# Marks in the planned words, replaced by each renderer (no character any of them quotes).
WORKERS_MARK = "@VKRAMA_RPC_WORKERS@"
HOST_MARK = "@VKRAMA_RPC_HOST@"
PORT_MARK = "@VKRAMA_RPC_PORT@"
WORKER_SUFFIX = "-rpc-worker"

# The leader's wrapper (bash, in every image): wait until each worker accepts a connection,
# then start llama-server with them. rpc-server listens only once its devices are up, and
# llama-server gives up on a worker it cannot reach, so without this a leader that starts
# first (they start together in a LeaderWorkerSet) would fail and restart its whole group.
# One line: a quadlet's Exec= cannot hold a newline.
_WAIT = (
    'for worker in ${workers//,/ }; do '
    'until (exec 3<>"/dev/tcp/${worker%:*}/${worker##*:}") 2>/dev/null; do '
    'echo "vkrama: waiting for rpc-server at $worker" >&2; sleep 2; done; done; '
    f'exec "$@" {FLAG["rpc"].server} "$workers"'
)  # fmt: skip


# LeaderWorkerSet: LWS_LEADER_ADDRESS is LEADER.SUBDOMAIN.NAMESPACE (the group's headless
# service) and worker i of the group (1 … LWS_GROUP_SIZE-1) is the pod LEADER-i under it,
# as LWS's own llama.cpp example derives them.
def lws_script(port: int) -> str:
    return (
        "workers=; for ((i = 1; i < LWS_GROUP_SIZE; i++)); do "
        'workers="$workers${workers:+,}${LWS_LEADER_ADDRESS%%.*}-$i.${LWS_LEADER_ADDRESS#*.}:'
        + f'{port}"; done; {_WAIT}'
    )


# Two hosts: the addresses come as the first argument, from the variable the user sets.
GIVEN_SCRIPT = (
    f'workers="${{1:?set {WORKERS_VAR} to the workers as HOST:PORT,HOST:PORT}}"; shift; {_WAIT}'
)


@dataclass(frozen=True)
class Split:
    """A leader (llama-server; `backend` and `driver` are its workers') and the rpc-server
    every worker runs, with `HOST_MARK` and `PORT_MARK` where its address goes."""

    leader: Workload
    worker: ContainerSpec
    workers: int
    port: int  # the workers' default RPC port

    @property
    def worker_name(self) -> str:
        return self.worker.name or f"{self.leader.name}{WORKER_SUFFIX}"


def plan(
    settings: Settings,
    request: ServeRequest,
    workers: int,
    replicas: int = 1,
    host_network: bool = True,
    on_progress: Reporter = NULL,
) -> Split:
    """The leader and worker `vkrama serve MODEL --rpc …` and `vkrama rpc-worker` would run.

    `host_network`: the two-host form (compose, quadlet), where both share their host's
    network like `serve --rpc` and `rpc-worker` do; Kubernetes gives each pod its own."""
    from vkrama.backends import Choice
    from vkrama.serve import plan as planning
    from vkrama.serve import rpc, session

    if request.rpc:
        raise VkramaError(
            "--rpc-workers writes the workers; --rpc names running ones",
            hint=f"drop --rpc (the leader's file takes the workers' addresses from {WORKERS_VAR})",
            status=ExitStatus.USAGE,
        )
    planned = session.plan(settings, request, on_progress=on_progress)
    choice, model = planned.choice, planned.model
    if choice is None or model is None:
        raise ValueError("a Planned from serve.session.plan carries its choice and model")
    image = planned.spec.image
    # The leader holds no layer: every one goes to the workers (the cpu backend's serve
    # keeps them on the host, hence the default is set here), unless --ngl says otherwise.
    leader_request = replace(
        request,
        ngl=request.ngl if request.ngl is not None else ALL_LAYERS,
        rpc=(WORKERS_MARK,) if host_network else (),
    )
    leader_choice = Choice(choice.backend, None, None, reason="the leader holds no layers")
    port = planned.spec.ports[0].host_port
    resolved = planning.Resolved(model, leader_choice, image, port, planned.api_key)
    spec = planning.plan(leader_request, resolved)
    command = list(spec.command)
    wrapper: tuple[str, ...]
    if host_network:
        at = command.index(FLAG["rpc"].server)  # as serve --rpc plans it; the wrapper adds it
        del command[at : at + 2]
        wrapper = ("bash", "-c", GIVEN_SCRIPT, "vkrama-leader", WORKERS_MARK)
    else:
        wrapper = ("bash", "-c", lws_script(rpc.DEFAULT_PORT), "vkrama-leader")
    # The addresses are known only where it runs, so no label names them.
    labels = {k: v for k, v in spec.labels.items() if k != "vkrama.rpc"}
    spec = replace(spec, command=(*wrapper, *command), labels=labels)
    # Its host port and model as serve's plan has them; the spec is the leader's.
    leader = replace(workload(planned, request.model, replicas, request.api_key_file), spec=spec)

    caches = [rpc.tensor_cache(settings.home)]
    compiled = compile_cache.for_backend(settings.home, choice.backend, choice.driver)
    if compiled is not None:
        caches.append(compiled)
    worker_request = rpc.WorkerRequest(
        choice.backend, request.gpu, request.vk_driver, HOST_MARK, rpc.DEFAULT_PORT,
        f"{spec.name}{WORKER_SUFFIX}",
    )  # fmt: skip
    worker = rpc.plan_worker(worker_request, choice, image, tuple(caches)).spec
    words = list(worker.command)
    words[words.index("--port") + 1] = PORT_MARK
    worker = replace(
        worker,
        command=tuple(words),
        labels={**worker.labels, "vkrama.url": f"rpc://{HOST_MARK}:{PORT_MARK}"},
    )
    return Split(leader, worker, workers, rpc.DEFAULT_PORT)


def fill(text: str, marks: dict[str, str]) -> str:
    """`text` with each mark written as a renderer writes it."""
    for mark, value in marks.items():
        text = text.replace(mark, value)
    return text
