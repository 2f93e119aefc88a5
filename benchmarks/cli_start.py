"""CLI start: wall seconds of `vkrama --help` and `vkrama ps` against ramalama's.

Stage: benchmarks (not part of vkrama). Each sample is a fresh process, as a user types it.
Goal: `vkrama --help` ≤ 0.10 s. `ps` is reported (vkrama asks podman's REST API through a
running socket; ramalama runs the `podman ps` command). When the --help goal is missed, the
heaviest imports (`python -X importtime`) go into the notes: that is where the time goes.
"""

from __future__ import annotations

import re
import sys

from benchmarks.harness import Outcome, Row, alternate, ratio_row, run
from benchmarks.inputs import REPO, Session

NAME = "cli_start"
TITLE = "CLI start"
HELP_GOAL_S = 0.10
MIN_PAIRS = 10  # samples are cheap; more of them steady the median


def measure(session: Session) -> Outcome:
    outcome = Outcome()
    pairs = session.pairs if session.quick else max(session.pairs, MIN_PAIRS)
    for args in (("--help",), ("ps",)):
        text = " ".join(args)

        def side_a(args: tuple[str, ...] = args) -> dict[str, float]:
            ran = run(session.vkrama(*args), env=session.env(), what=f"vkrama {args[0]}")
            return {"s": ran.seconds}

        def side_b(args: tuple[str, ...] = args) -> dict[str, float]:
            ran = run(
                session.ramalama(*args),
                env=session.ramalama_env(),
                what=f"ramalama {args[0]}",
                peer=True,
            )
            return {"s": ran.seconds}

        sides = alternate(side_a, side_b, pairs, session.warmup)
        if sides.a_error:
            outcome.vkrama_failures.append(f"{TITLE} vkrama {text}: {sides.a_error}")
        row = Row(
            TITLE,
            f"{text}",
            "s",
            f"vkrama {text}",
            sides.stats("a", "s"),
            f"ramalama {text}",
            sides.stats("b", "s"),
            note=sides.a_error or sides.b_error,
            command=f"vkrama {text}",
        )
        ratio_row(row, None, invert=True)  # B/A: how many times faster vkrama starts
        if args == ("--help",) and row.a is not None:
            row.goal = f"A ≤ {HELP_GOAL_S:.2f} s"
            row.met = row.a.median <= HELP_GOAL_S
            if not row.met:
                outcome.notes.append(f"vkrama --help imports: {heaviest_imports()}")
        outcome.rows.append(row)
    outcome.notes.append(f"CLI start: {pairs} pairs per command (each sample a fresh process)")

    floor = alternate(lambda: {"s": run([sys.executable, "-c", "pass"]).seconds}, None, pairs)
    outcome.rows.append(
        Row(
            TITLE,
            "python -c pass (floor)",
            "s",
            "python3 startup",
            floor.stats("a", "s"),
            note="the interpreter alone: no Python CLI starts faster",
        )
    )
    return outcome


def heaviest_imports(count: int = 6) -> str:
    """The top-level imports of `vkrama --help` that take longest (cumulative µs)."""
    probe = "import sys; from vkrama.cli import main; sys.argv = ['vkrama', '--help']; main()"
    ran = run([sys.executable, "-X", "importtime", "-c", probe], cwd=REPO, what="importtime")
    found: list[tuple[int, str]] = []
    for line in ran.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(2)) <= 1:  # top level only: one space of indent
            found.append((int(match.group(1)), match.group(3)))
    found.sort(reverse=True)
    return ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in found[:count])
