"""`python -m benchmarks [--quick] [--only NAME …]`: run the comparisons, write the results.

Stage: benchmarks (not part of vkrama). Runs each comparison module, writes
benchmarks/results/<date>.json and .md (with --quick: benchmarks/.cache/results-quick/, so
CI leaves the tracked results alone) and prints the markdown table. Exit status 1 when
vkrama's side of any comparison failed; a missing or failing peer (ramalama, curl) is
recorded, never fatal. Speeds are reported, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import traceback
from types import ModuleType

from benchmarks import (
    cli_start,
    defaults,
    fidelity,
    image_size,
    machine,
    pull,
    pull_capped,
    report,
    serve_first_chat,
    serve_ready,
    tune,
)
from benchmarks.harness import Outcome, PeerUnavailable, SideFailed
from benchmarks.inputs import REPO, Session

# Cheap ones first, so that a quick look needs no image or model.
COMPARISONS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (
        cli_start,
        image_size,
        serve_ready,
        serve_first_chat,
        pull,
        pull_capped,
        fidelity,
        defaults,
        tune,
    )
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one pair each, small sizes, no warm-up (CI: keeps the harness alive)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(COMPARISONS),
        metavar="NAME",
        help=f"run only these: {', '.join(COMPARISONS)}",
    )
    parser.add_argument("--pairs", type=int, help="measured pairs (default 5; 1 with --quick)")
    parser.add_argument("--warmup", type=int, help="warm-up pairs (default 1; 0 with --quick)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    pairs = args.pairs or (1 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    session = Session(quick=args.quick, pairs=pairs, warmup=warmup)
    names = args.only or list(COMPARISONS)
    started, load_before = time.monotonic(), machine.load()
    rows, notes, failures = [], [], []
    try:
        session.start_socket()
        for name in names:
            print(f"benchmarks: {name} …", file=sys.stderr, flush=True)
            outcome = run_one(COMPARISONS[name], session)
            rows += outcome.rows
            notes += outcome.notes
            failures += outcome.vkrama_failures
    finally:
        session.close()
    try:
        ramalama: list[str] | None = session.ramalama()
    except PeerUnavailable:
        ramalama = None
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "full",
        "pairs": pairs,
        "warmup": warmup,
        "only": names,
        "load_before": load_before,
        "load_after": machine.load(),
        "seconds": time.monotonic() - started,
        "machine": machine.describe(session.vkrama(), ramalama),
        "vkrama_failures": failures,
    }
    # A partial run (--only) gets its own file and never overwrites the day's full run.
    stem = datetime.date.today().isoformat()
    if args.only:
        stem += "-" + "-".join(names)
    directory = session.cache / "results-quick" if args.quick else REPO / "benchmarks" / "results"
    json_path, md_path = report.write(directory, stem, meta, rows, notes)
    print(report.markdown(meta, rows, notes))
    print(f"benchmarks: wrote {json_path} and {md_path}", file=sys.stderr)
    if failures:
        print(f"benchmarks: vkrama failed in {len(failures)} place(s):", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


def run_one(module: ModuleType, session: Session) -> Outcome:
    """One comparison; its set-up failing (image build, model) counts against vkrama."""
    try:
        outcome = module.measure(session)
        assert isinstance(outcome, Outcome)
        return outcome
    except SideFailed as failed:
        return Outcome(vkrama_failures=[f"{module.TITLE}: {failed}"])
    except Exception as error:  # a bug in the harness or in vkrama: show it, go on
        traceback.print_exc()
        return Outcome(vkrama_failures=[f"{module.TITLE}: {type(error).__name__}: {error}"])


if __name__ == "__main__":
    sys.exit(main())
