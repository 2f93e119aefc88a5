"""Serve ready: seconds from the command to a server that answers, vkrama against raw podman
and against ramalama.

Stage: benchmarks (not part of vkrama). A: `vkrama serve TINY --backend cpu -d`, which returns
once llama-server is ready. B: the `podman run --detach …` line that `vkrama --dry-run serve`
prints (same image, arguments and security flags), then GET /health every 20 ms (vkrama's own
poll interval) until 200. C: `ramalama serve -d` in the same image, polled the same way
(it returns before the server is ready). Goals: A − B ≤ 0.3 s; A faster than C. Every
container is removed after its sample, untimed.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import time

from benchmarks.harness import (
    Outcome,
    Row,
    SideFailed,
    Sides,
    alternate,
    ratio_row,
    run,
)
from benchmarks.inputs import RAMALAMA_NO_REGISTRY, Session, planned_podman_run

NAME = "serve_ready"
TITLE = "serve ready"
OVERHEAD_GOAL_S = 0.3
POLL_S = 0.02
READY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_health(port: int, started: float, timeout: float = READY_TIMEOUT_S) -> float:
    """Seconds from `started` until GET /health answers 200 on 127.0.0.1:port."""
    while time.perf_counter() - started < timeout:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return time.perf_counter() - started
        except OSError:
            pass  # refused or reset while the container starts
        finally:
            connection.close()
        time.sleep(POLL_S)
    raise SideFailed(f"no 200 from /health on port {port} within {timeout:.0f} s")


def remove(name: str) -> None:
    subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, check=False)


def measure(session: Session) -> Outcome:
    outcome = Outcome()
    model = session.model("tiny")
    image = session.image("cpu")
    env = session.env()
    # Pulled once (untimed): serving a stored model is the everyday case, and ramalama too
    # serves from its store. A plain path is measured as well: vkrama then reads its GGUF.
    stored = f"file://{model}"
    run(session.vkrama("pull", str(model)), env=env, what="vkrama pull (set-up)")

    def side_vkrama(ref: str = stored) -> dict[str, float]:
        port = free_port()
        ran = run(
            session.vkrama("serve", ref, "--backend", "cpu", "--port", str(port), "-d"),
            env=env,
            what="vkrama serve -d",
            timeout=READY_TIMEOUT_S,
        )
        name = ran.stdout.split()[0] if ran.stdout.split() else ""
        try:
            run(session.vkrama("stop", name), env=env, what=f"vkrama stop {name}")
        except SideFailed:
            remove(name)
            raise
        return {"s": ran.seconds}

    def side_raw() -> dict[str, float]:
        port = free_port()
        planned = run(
            session.vkrama("--dry-run", "serve", stored, "--backend", "cpu", "--port", str(port)),
            env=env,
            what="vkrama --dry-run serve",
        )
        name = f"bench-raw-{port}"
        argv = planned_podman_run(planned.stdout, "vkrama --dry-run serve", ("--name", name))
        started = time.perf_counter()
        try:
            run(argv, what="podman run --detach llama-server")
            return {"s": wait_health(port, started)}
        finally:
            remove(name)

    def side_ramalama() -> dict[str, float]:
        port = free_port()
        name = f"bench-ramalama-{port}"
        argv = session.ramalama(
            "serve",
            "-d",
            "--image",
            image,
            *RAMALAMA_NO_REGISTRY,
            "--port",
            str(port),
            "--name",
            name,
            session.ramalama_model(model),
        )
        started = time.perf_counter()
        try:
            run(argv, env=session.ramalama_env(), what="ramalama serve -d", peer=True)
            return {"s": wait_health(port, started)}
        finally:
            remove(name)

    raw_sides = alternate(side_vkrama, side_raw, session.pairs, session.warmup)
    path_sides = alternate(lambda: side_vkrama(str(model)), side_raw, session.pairs, session.warmup)
    rama_sides = alternate(side_vkrama, side_ramalama, session.pairs, session.warmup)
    for sides in (raw_sides, path_sides, rama_sides):
        if sides.a_error:
            outcome.vkrama_failures.append(f"{TITLE}: {sides.a_error}")
    outcome.rows.append(
        overhead_row(
            raw_sides,
            "stored tiny model, cpu: vs raw podman",
            "vkrama serve MODEL --backend cpu -d",
        )
    )
    outcome.rows.append(
        overhead_row(
            path_sides,
            "tiny model by path, cpu: vs raw podman",
            "vkrama serve ./tiny.gguf --backend cpu -d",
        )
    )
    versus = Row(
        TITLE,
        "stored tiny model, cpu: vs ramalama",
        "s",
        "vkrama serve -d",
        rama_sides.stats("a", "s"),
        "ramalama serve -d + poll /health",
        rama_sides.stats("b", "s"),
        goal="A faster than B (B/A > 1)",
        note=rama_sides.a_error or rama_sides.b_error,
        command="vkrama serve MODEL --backend cpu -d",
    )
    outcome.rows.append(ratio_row(versus, None, invert=True))
    if versus.ratio is not None:
        versus.met = versus.ratio > 1.0
    outcome.notes.append(
        "serve ready: vkrama connects to a running podman socket (CONTAINER_HOST), as with "
        "podman.socket; ramalama runs `podman run` itself; the raw side is the exact line "
        "`vkrama --dry-run serve` prints, polled every 20 ms"
    )
    return outcome


def overhead_row(sides: Sides, case: str, command: str) -> Row:
    a, b = sides.stats("a", "s"), sides.stats("b", "s")
    row = Row(
        TITLE,
        case,
        "s",
        "vkrama serve -d",
        a,
        "raw podman run -d + poll /health",
        b,
        goal=f"A − B ≤ {OVERHEAD_GOAL_S} s",
        note=sides.a_error or sides.b_error,
        command=command,
    )
    if a is not None and b is not None:
        row.ratio = a.median - b.median
        row.ratio_text = f"{row.ratio:+.3f} s"
        row.met = row.ratio <= OVERHEAD_GOAL_S
    return row
