"""Serve first chat: the time to first token of the first chat after a server is ready,
vkrama (which warms the server before it says ready) against a raw `podman run` of the
same llama-server (no warm-up).

Stage: benchmarks (not part of vkrama). A: `vkrama serve TINY --backend B -d`, then one chat.
B: the `podman run --detach …` line `vkrama --dry-run serve` prints (same image, arguments,
mounts and compile cache), GET /health until 200, then the same chat. The chat asks for one
token without streaming, so its wall time is its time to first token; the server's own
`timings.prompt_ms` is kept beside it, and a second chat of the same prompt (no prompt
reuse) tells how much of the first one was first-use cost. Per backend two cases: the
compile cache as vkrama keeps it (already filled by earlier starts) and emptied before every
start (a fresh machine). Every container is removed after its sample, untimed.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from functools import partial

from benchmarks.harness import Outcome, Row, SideFailed, Sides, alternate, ratio_row, run
from benchmarks.inputs import Session, planned_podman_run
from benchmarks.serve_ready import READY_TIMEOUT_S, free_port, remove, wait_health

NAME = "serve_first_chat"
TITLE = "serve first chat"
CHAT = {
    "messages": [{"role": "user", "content": "Tell me about the lighthouse on the hill."}],
    "max_tokens": 1,
    "cache_prompt": False,  # the second chat must compute the same prompt again
}
CASES = (("cpu", ()), ("vulkan", ("--vk-driver", "lavapipe")))


def chat(port: int) -> tuple[float, float]:
    """(wall seconds, the server's prompt_ms) of one one-token chat."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(CHAT).encode(),
        headers={"Content-Type": "application/json"},
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=READY_TIMEOUT_S) as answer:
            body = json.load(answer)
    except OSError as error:
        raise SideFailed(f"chat on port {port} failed: {error}") from None
    return time.perf_counter() - started, float(body["timings"]["prompt_ms"])


def chats(port: int) -> dict[str, float]:
    first_s, first_ms = chat(port)
    _, second_ms = chat(port)
    return {"first_s": first_s, "first_prompt_ms": first_ms, "second_prompt_ms": second_ms}


def side_vkrama(session: Session, cells: tuple[str, ...], fresh: bool) -> dict[str, float]:
    forget(session, fresh)
    port = free_port()
    ran = run(
        session.vkrama("serve", stored(session), *cells, "--port", str(port), "-d"),
        env=session.env(),
        what="vkrama serve -d",
        timeout=READY_TIMEOUT_S,
    )
    name = ran.stdout.split()[0] if ran.stdout.split() else ""
    try:
        return {**chats(port), "ready_s": ran.seconds}
    finally:
        remove(name)


def side_raw(session: Session, cells: tuple[str, ...], fresh: bool) -> dict[str, float]:
    forget(session, fresh)
    port = free_port()
    planned = run(
        session.vkrama("--dry-run", "serve", stored(session), *cells, "--port", str(port)),
        env=session.env(),
        what="vkrama --dry-run serve",
    )
    for line in planned.stdout.splitlines():  # the compile cache folder, made as printed
        if line.startswith("mkdir "):
            run(["sh", "-c", line], what="mkdir of the compile cache")
    name = f"bench-first-chat-{port}"
    argv = planned_podman_run(planned.stdout, "vkrama --dry-run serve", ("--name", name))
    started = time.perf_counter()
    try:
        run(argv, what="podman run --detach llama-server")
        ready_s = wait_health(port, started)
        return {**chats(port), "ready_s": ready_s}
    finally:
        remove(name)


def forget(session: Session, fresh: bool) -> None:
    """What a first start on a new machine finds: no compiled code kept."""
    if fresh:
        shutil.rmtree(session.home / "cache", ignore_errors=True)


def stored(session: Session) -> str:
    return f"file://{session.model('tiny')}"


def measure(session: Session) -> Outcome:
    outcome = Outcome()
    run(session.vkrama("pull", str(session.model("tiny"))), env=session.env(), what="vkrama pull")
    for backend, flags in CASES:
        session.image(backend)
        cells = ("--backend", backend, *flags)
        for fresh in (False, True):
            sides = alternate(
                partial(side_vkrama, session, cells, fresh),
                partial(side_raw, session, cells, fresh),
                session.pairs,
                session.warmup,
            )
            if sides.a_error:
                outcome.vkrama_failures.append(f"{TITLE}: {sides.a_error}")
            cell = f"{backend}{'/lavapipe' if flags else ''}"
            cache = "compile cache emptied before each start" if fresh else "compile cache kept"
            row = Row(
                TITLE,
                f"tiny, {cell}, {cache}: first chat's time to first token",
                "s",
                "vkrama serve -d (warmed) + chat",
                sides.stats("a", "first_s"),
                "raw podman run + poll /health + chat",
                sides.stats("b", "first_s"),
                goal="reported: raw ÷ vkrama",
                note=sides.a_error or sides.b_error or prompt_note(sides),
                command=f"vkrama serve MODEL {' '.join(cells)} -d, then one chat",
            )
            outcome.rows.append(ratio_row(row, None, invert=True))
    outcome.notes.append(
        "serve first chat: one-token chats of the same 20-odd-token prompt, prompt reuse off; "
        "the raw side runs the exact line `vkrama --dry-run serve` prints (same compile "
        "cache mount), with no warm-up"
    )
    return outcome


def prompt_note(sides: Sides) -> str:
    """Each side's ready time and its server's prompt_ms of the first and second chat."""
    parts = []
    for name, label in (("a", "vkrama"), ("b", "raw")):
        first, second = sides.stats(name, "first_prompt_ms"), sides.stats(name, "second_prompt_ms")
        ready = sides.stats(name, "ready_s")
        if first and second and ready:
            parts.append(
                f"{label}: ready {ready.median:.2f} s, prompt_ms first {first.median:.1f} "
                f"second {second.median:.1f} (medians)"
            )
    return "; ".join(parts)
