"""Pull: `vkrama pull` of a ~1 GiB GGUF from a loopback HTTP server against `curl -o`, and
how much a pull resumed after `kill -9` fetches twice.

Stage: benchmarks (not part of vkrama). Both sides fetch the same file from the same server
process (benchmarks.loopback, sendfile(2)); the file sits in the page cache after the
warm-up, so the client sets the pace. vkrama also hashes (sha256), checks the GGUF and files
the model in its store: that is part of what a user waits for. Goals: A ≥ 0.9 × curl in
MB/s; after a kill at ~half way, the second pull re-fetches ≤ 1 MiB of what was on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    Outcome,
    PeerUnavailable,
    Row,
    SideFailed,
    Stats,
    alternate,
    ratio_row,
    run,
)
from benchmarks.inputs import REPO, Session

NAME = "pull"
TITLE = "pull"
GOAL = 0.9
RESUME_GOAL_MIB = 1.0
MIB = 1 << 20


def big_model(session: Session) -> Path:
    """A ~1.06 GiB random-weight F16 llama GGUF (10 layers of the bench shape), made once."""
    path = session.cache / "pull-1g.gguf"
    if not path.exists():
        # The writer behind examples/make_model.py: a fixture beside it, not part of vkrama.
        sys.path.insert(0, str(REPO / "examples"))
        import examplemodel

        shape = examplemodel.Shape("vkrama-pull", 2048, 10, 32, 4, 5632, 32000, 4096)
        session.cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        examplemodel.write(tmp, shape)
        tmp.replace(path)
    return path


class Loopback:
    """benchmarks.loopback in its own process, serving one directory."""

    def __init__(self, root: Path, cache: Path) -> None:
        port_file = cache / "loopback.port"
        port_file.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.loopback", str(root), str(port_file)],
            cwd=Path(__file__).resolve().parent.parent,
        )
        deadline = time.monotonic() + 10
        while not port_file.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise SideFailed("the loopback HTTP server did not start")
            time.sleep(0.02)
        self.base = f"http://127.0.0.1:{port_file.read_text()}"

    def log(self, reset: bool = False) -> list[dict[str, Any]]:
        url = f"{self.base}/_log" + ("?reset=1" if reset else "")
        with urllib.request.urlopen(url, timeout=5) as answer:
            return list(json.loads(answer.read()))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def measure(session: Session) -> Outcome:
    outcome = Outcome()
    model = big_model(session)
    size = model.stat().st_size
    server = Loopback(model.parent, session.cache)
    url = f"{server.base}/{model.name}"
    homes = session.cache / "pull-homes"
    curl_out = session.cache / "pull-curl.out"
    try:

        def side_a() -> dict[str, float]:
            shutil.rmtree(homes, ignore_errors=True)
            env = {**session.env(), "VKRAMA_HOME": str(homes / "a")}
            ran = run(session.vkrama("pull", url), env=env, what="vkrama pull", timeout=600)
            shutil.rmtree(homes, ignore_errors=True)
            return {"MB/s": size / ran.seconds / 1e6}

        def side_b() -> dict[str, float]:
            if shutil.which("curl") is None:
                raise PeerUnavailable("curl is not installed")
            curl_out.unlink(missing_ok=True)
            ran = run(
                ["curl", "-sS", "--fail", "-o", str(curl_out), url],
                what="curl -o",
                peer=True,
                timeout=600,
            )
            curl_out.unlink(missing_ok=True)
            return {"MB/s": size / ran.seconds / 1e6}

        sides = alternate(side_a, side_b, session.pairs, session.warmup)
        if sides.a_error:
            outcome.vkrama_failures.append(f"{TITLE}: {sides.a_error}")
        row = Row(
            TITLE,
            f"{size / MIB:.0f} MiB GGUF over loopback",
            "MB/s",
            "vkrama pull",
            sides.stats("a", "MB/s"),
            "curl -o",
            sides.stats("b", "MB/s"),
            goal=f"A/B ≥ {GOAL}",
            note=sides.a_error or sides.b_error,
            command="vkrama pull http://127.0.0.1:PORT/pull-1g.gguf",
        )
        outcome.rows.append(ratio_row(row, GOAL))
        outcome.rows.append(resume_row(session, server, url, size, homes, outcome))
    finally:
        server.close()
        shutil.rmtree(homes, ignore_errors=True)
        curl_out.unlink(missing_ok=True)
    return outcome


def resume_row(
    session: Session, server: Loopback, url: str, size: int, homes: Path, outcome: Outcome
) -> Row:
    """Kill a pull at ~half way, pull again, count the bytes that came twice."""
    refetched: list[float] = []
    error = ""
    for _ in range(1 if session.quick else 3):
        try:
            refetched.append(kill_and_resume(session, server, url, size, homes) / MIB)
        except SideFailed as failed:
            error = str(failed)
            outcome.vkrama_failures.append(f"{TITLE} resume: {failed}")
            break
    row = Row(
        TITLE,
        "resume after kill -9 at ~50 %",
        "MiB",
        "re-fetched by the 2nd pull",
        Stats.of(refetched) if refetched else None,
        goal=f"A ≤ {RESUME_GOAL_MIB} MiB",
        note=error,
        command="vkrama pull URL; kill -9; vkrama pull URL",
    )
    if row.a is not None:
        row.met = row.a.high <= RESUME_GOAL_MIB
        row.ratio_text = f"worst {row.a.high:.3f} MiB"
    return row


def kill_and_resume(session: Session, server: Loopback, url: str, size: int, homes: Path) -> int:
    shutil.rmtree(homes, ignore_errors=True)
    env = {**session.env(), "VKRAMA_HOME": str(homes / "resume")}
    argv = session.vkrama("pull", url)
    server.log(reset=True)
    first = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    partial_dir = homes / "resume" / "models" / "partial"
    held = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        parts = list(partial_dir.glob("*.part")) if partial_dir.exists() else []
        held = max((p.stat().st_size for p in parts), default=0)
        if held >= size // 2:
            break
        time.sleep(0.002)
    first.send_signal(signal.SIGKILL)
    first.wait()
    parts = list(partial_dir.glob("*.part"))
    if not parts:
        raise SideFailed("no partial file after killing vkrama pull (finished too soon?)")
    held = max(p.stat().st_size for p in parts)
    resumed_at = time.time()
    run(argv, env=env, what="vkrama pull (resumed)", timeout=600)
    second = sum(int(e["sent"]) for e in server.log(reset=True) if e["began"] >= resumed_at)
    shutil.rmtree(homes, ignore_errors=True)
    return max(0, second - (size - held))
