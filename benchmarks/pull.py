"""Pull: `vkrama pull --streams 1` of a ~1 GiB GGUF from a loopback HTTP server against
`curl -o`, and how much a pull resumed after `kill -9` fetches twice.

Stage: benchmarks (not part of vkrama). Both sides fetch the same file from the same server
process (benchmarks.loopback, sendfile(2)); the file sits in the page cache after the
warm-up, so the client sets the pace. vkrama also hashes (sha256), checks the GGUF and files
the model in its store: that is part of what a user waits for. One stream against curl's
one: the per-byte cost of the download path (pull_capped measures several streams). Goals:
A ≥ 1.0 × curl in MB/s; after a kill at ~half way, the second pull (default streams)
re-fetches at most one segment per stream of what was on disk.
"""

from __future__ import annotations

import compileall
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
from vkrama.config import DEFAULTS
from vkrama.store import ranges

NAME = "pull"
TITLE = "pull"
GOAL = 1.0
MIB = 1 << 20
STREAMS = int(DEFAULTS["models.streams"])


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

    def __init__(self, root: Path, cache: Path, rate: float | None = None) -> None:
        port_file = cache / "loopback.port"
        port_file.unlink(missing_ok=True)
        cap = [] if rate is None else [str(rate)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.loopback", str(root), str(port_file), *cap],
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
    try:
        row = versus_curl(session, outcome, url, size, homes, ("--streams", "1"))
        row.comparison, row.case = TITLE, f"{size / MIB:.0f} MiB GGUF over loopback"
        outcome.rows.append(ratio_row(row, GOAL))
        # What vkrama hands over is a file it has verified: the same by hand is curl, then
        # sha256sum. One sha256 digest cannot be split across cores, so where hashing is
        # slower than the wire it sets one stream's pace for both sides of this row.
        row = versus_curl(session, outcome, url, size, homes, ("--streams", "1"), verify=True)
        row.comparison, row.case = TITLE, f"{size / MIB:.0f} MiB GGUF, a verified file"
        outcome.rows.append(ratio_row(row, GOAL))
        outcome.rows.append(resume_row(session, server, url, size, homes, outcome))
    finally:
        server.close()
        shutil.rmtree(homes, ignore_errors=True)
    return outcome


def versus_curl(
    session: Session,
    outcome: Outcome,
    url: str,
    size: int,
    homes: Path,
    flags: tuple[str, ...],
    *,
    verify: bool = False,
) -> Row:
    """`vkrama pull FLAGS URL` (A) against `curl -o` (B) in MB/s, alternating pairs; with
    `verify`, B is `curl -o` followed by `sha256sum` of the file. The caller names the row
    and sets its goal."""
    curl_out = homes.with_suffix(".curl")
    shown = " ".join(("vkrama pull", *flags))
    peer = "curl -o + sha256sum" if verify else "curl -o"
    # vkrama's bytecode, as `pip install` leaves it: where PYTHONDONTWRITEBYTECODE is set
    # (as in some CI and sandboxes), an editable checkout would otherwise compile every
    # module from source on each run (~0.1-0.2 s of CPU, profiled) — a cost no user has.
    compileall.compile_dir(REPO / "vkrama", quiet=1)

    def side_a() -> dict[str, float]:
        shutil.rmtree(homes, ignore_errors=True)
        env = {**session.env(), "VKRAMA_HOME": str(homes / "a")}
        ran = run(session.vkrama("pull", *flags, url), env=env, what=shown, timeout=600)
        shutil.rmtree(homes, ignore_errors=True)
        return {"MB/s": size / ran.seconds / 1e6}

    def side_b() -> dict[str, float]:
        if shutil.which("curl") is None:
            raise PeerUnavailable("curl is not installed")
        curl_out.unlink(missing_ok=True)
        argv = ["curl", "-sS", "--fail", "-o", str(curl_out), url]
        seconds = run(argv, what="curl -o", peer=True, timeout=600).seconds
        if verify:
            seconds += run(["sha256sum", str(curl_out)], what=peer, peer=True).seconds
        curl_out.unlink(missing_ok=True)
        return {"MB/s": size / seconds / 1e6}

    try:
        sides = alternate(side_a, side_b, session.pairs, session.warmup)
    finally:
        curl_out.unlink(missing_ok=True)
    if sides.a_error:
        outcome.vkrama_failures.append(f"{shown}: {sides.a_error}")
    return Row(
        TITLE,
        "",
        "MB/s",
        shown,
        sides.stats("a", "MB/s"),
        peer,
        sides.stats("b", "MB/s"),
        goal=f"A/B ≥ {GOAL}",
        note=sides.a_error or sides.b_error,
        command=f"{shown} http://127.0.0.1:PORT/pull-1g.gguf",
    )


def resume_row(
    session: Session, server: Loopback, url: str, size: int, homes: Path, outcome: Outcome
) -> Row:
    """Kill a pull at ~half way, pull again, count the bytes served twice."""
    refetched: list[float] = []
    error = ""
    for _ in range(1 if session.quick else 3):
        try:
            refetched.append(kill_and_resume(session, server, url, size, homes) / MIB)
        except SideFailed as failed:
            error = str(failed)
            outcome.vkrama_failures.append(f"{TITLE} resume: {failed}")
            break
    bound = STREAMS * ranges.segment_size(size, STREAMS) / MIB  # one segment per stream
    row = Row(
        TITLE,
        f"resume after kill -9 at ~50 % ({STREAMS} streams)",
        "MiB",
        "re-fetched by the 2nd pull",
        Stats.of(refetched) if refetched else None,
        goal=f"A ≤ {bound:.0f} MiB",
        note=error,
        command="vkrama pull URL; kill -9; vkrama pull URL",
    )
    if row.a is not None:
        row.met = row.a.high <= bound
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
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        if held_bytes(partial_dir) >= size // 2:
            break
        time.sleep(0.002)
    first.send_signal(signal.SIGKILL)
    first.wait()
    if not list(partial_dir.glob("*.part")):
        raise SideFailed("no partial file after killing vkrama pull (finished too soon?)")
    run(argv, env=env, what="vkrama pull (resumed)", timeout=600)
    # Everything sent over both pulls beyond the file's size: the bytes on disk that the
    # record had not caught up with, and those still in the sockets at the kill.
    served = sum(int(e["sent"]) for e in server.log(reset=True))
    shutil.rmtree(homes, ignore_errors=True)
    return max(0, served - size)


def held_bytes(partial_dir: Path) -> int:
    """What the partial file holds by vkrama's own record: the bytes done of each range
    (a ranged download's file is preallocated), else the file's size (one stream)."""
    for record in partial_dir.glob("*.ranges") if partial_dir.exists() else []:
        try:
            return sum(int(done) for done in json.loads(record.read_text())["done"])
        except (OSError, ValueError, KeyError):
            continue  # replaced while read: the next look finds the new one
    parts = list(partial_dir.glob("*.part")) if partial_dir.exists() else []
    return max((p.stat().st_size for p in parts), default=0)
