"""Progress: stages report typed events to one Reporter; the console draws them, the null
reporter swallows them. Transcripts are what a log (stderr not a terminal) shows."""

from __future__ import annotations

import pytest

from vkrama.cli.progress import ConsoleReporter
from vkrama.progress import (
    NULL,
    BuildProgress,
    Download,
    Event,
    NullReporter,
    Reporter,
    Retry,
    Step,
)

BUILD = [
    BuildProgress("cpu", 1, 3, "STEP 1/3: FROM debian:sid"),
    BuildProgress("cpu", 1, 3, "output of step 1"),
    BuildProgress("cpu", 2, 3, "STEP 2/3: RUN apt-get install"),
]


def transcript(reporter: Reporter, events: list[Event], capsys: pytest.CaptureFixture[str]) -> str:
    for event in events:
        reporter(event)
    if isinstance(reporter, ConsoleReporter):
        reporter.close()
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout is for --json and tables
    return captured.err


@pytest.mark.parametrize(
    ("verbose", "every_build_line", "events", "shown"),
    [
        pytest.param(0, False, [Step("backend cpu: asked for", detail=True),
                                Step("backend vulkan (lavapipe): the only GPU stack")],
                     "backend vulkan (lavapipe): the only GPU stack\n",
                     id="a-detail-waits-for-v-a-choice-explains-itself"),
        pytest.param(1, False, [Step("backend cpu: asked for", detail=True)],
                     "backend cpu: asked for\n", id="v-shows-details"),
        pytest.param(0, False, BUILD, "[cpu] step 1/3  FROM debian:sid\n"
                                      "[cpu] step 2/3  RUN apt-get install\n",
                     id="a-build-started-by-serve-or-bench-shows-one-line-per-step"),
        pytest.param(1, False, BUILD, "[cpu] STEP 1/3: FROM debian:sid\n[cpu] output of step 1\n"
                                      "[cpu] STEP 2/3: RUN apt-get install\n",
                     id="v-shows-every-build-line"),
        pytest.param(0, True, BUILD[1:2], "[cpu] output of step 1\n",
                     id="images-build-shows-every-build-line"),
        pytest.param(0, False, [Download("m.gguf", 5, 10), Retry("m.gguf", "timed out", 1, 2, 0.5),
                                Download("m.gguf", 10, 10)],
                     "m.gguf: timed out; retry 1 of 2 in 0.5 s\n",
                     id="a-download-in-a-log-shows-only-its-retries"),
    ],
)  # fmt: skip
def test_the_console_reporter_in_a_log(
    verbose: int,
    every_build_line: bool,
    events: list[Event],
    shown: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = ConsoleReporter(verbose, every_build_line=every_build_line, tty=False)
    assert transcript(reporter, events, capsys) == shown


def test_on_a_terminal_a_step_ends_the_redrawn_build_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = ConsoleReporter(tty=True)
    reporter.build.min_interval = 0
    shown = transcript(reporter, [*BUILD[:2], Step("ready")], capsys)
    # click drops the erase-to-end-of-line code when stderr is captured, as here.
    assert shown == "\r[cpu] step 1/3  FROM debian:sid\r[cpu] step 1/3  output of step 1\nready\n"


def test_on_a_terminal_a_file_of_unknown_size_shows_its_bytes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`images save`: podman streams the archive as it makes it, so there is no total."""
    shown = transcript(ConsoleReporter(tty=True), [Download("cpu.tar", 3 * 2**20, None)], capsys)
    assert shown.startswith("\rcpu.tar  3.0/? MiB  ") and shown.endswith("MiB/s\n")


def test_the_null_reporter_is_the_default_and_shows_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert isinstance(NULL, NullReporter)
    assert transcript(NULL, [Step("x"), *BUILD, Download("m", 1, 2)], capsys) == ""
