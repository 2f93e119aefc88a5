"""Pull from a server that caps each connection: `vkrama pull` with its default streams
against `curl -o`, both fetching the ~1 GiB GGUF of benchmarks.pull.

Stage: benchmarks (not part of vkrama). Hubs and CDNs hold each connection to a rate; the
loopback server here holds each to CAP bytes/s, so one stream (curl) gets CAP and vkrama's
parallel ranges get up to streams × CAP. Goal: A ≥ 4 × curl in MB/s.
"""

from __future__ import annotations

import shutil

from benchmarks.harness import Outcome, ratio_row
from benchmarks.inputs import Session
from benchmarks.pull import MIB, STREAMS, Loopback, big_model, versus_curl

NAME = "pull_capped"
TITLE = "pull, capped"
GOAL = 4.0
CAP = 50e6  # bytes per second and connection


def measure(session: Session) -> Outcome:
    outcome = Outcome()
    model = big_model(session)
    size = model.stat().st_size
    server = Loopback(model.parent, session.cache, rate=CAP)
    url = f"{server.base}/{model.name}"
    homes = session.cache / "pull-capped-homes"
    try:
        row = versus_curl(session, outcome, url, size, homes, ())
    finally:
        server.close()
        shutil.rmtree(homes, ignore_errors=True)
    row.comparison = TITLE
    row.case = f"{size / MIB:.0f} MiB GGUF, loopback capped at {CAP / 1e6:.0f} MB/s a connection"
    row.a_label = f"vkrama pull ({STREAMS} streams)"
    row.goal = f"A/B ≥ {GOAL}"
    row.command += f" (server: {CAP / 1e6:.0f} MB/s a connection)"
    outcome.rows.append(ratio_row(row, GOAL))
    return outcome
