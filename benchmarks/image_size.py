"""Image size: each vkrama image that is built here, against ramalama's published sizes.

Stage: benchmarks (not part of vkrama). Reads `podman image inspect` (uncompressed size in
MB = 10^6 bytes, as `podman images` shows it); builds nothing, so an image that was never
built is listed as such. ramalama's images cannot be pulled here (no registry), so its side
is the figure its own project published, with where it comes from, or "unknown". Goals:
vulkan ≤ 750 MB, cuda ≤ 2 GB.
"""

from __future__ import annotations

import subprocess

from benchmarks.harness import Outcome, Row, Stats
from benchmarks.inputs import Session, image_ref

NAME = "image_size"
TITLE = "image size"
BACKENDS = ("cpu", "vulkan", "rocm", "cuda", "oneapi")
GOALS_MB = {"vulkan": 750, "cuda": 2000}

# Figures reported in ramalama's own tracker (`podman images`, uncompressed). Dated, and for
# older images than 0.25's: a ballpark, not a like-for-like measurement.
PUBLISHED: dict[str, tuple[float, str]] = {
    "vulkan": (
        1020,
        "quay.io/ramalama/ramalama-llama-server:latest, 1.02 GB "
        "(github.com/containers/ramalama/issues/838, 2025-02)",
    ),
    "cuda": (
        3020,
        "reduced CUDA image 3.02 GB, local build "
        "(github.com/containers/ramalama/pull/407, 2024-11)",
    ),
}


def size_mb(ref: str) -> float | None:
    done = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", ref],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip().isdigit():
        return None
    return int(done.stdout.strip()) / 1e6


def measure(session: Session) -> Outcome:
    outcome = Outcome()
    for backend in BACKENDS:
        ref = image_ref(backend)
        mb = size_mb(ref)
        published = PUBLISHED.get(backend)
        row = Row(
            TITLE,
            backend,
            "MB",
            ref,
            Stats.of([mb]) if mb is not None else None,
            "ramalama (published)",
            Stats.of([published[0]]) if published else None,
            command=f"vkrama images build {backend} && podman image inspect "
            f"--format '{{{{.Size}}}}' {ref}",
        )
        row.note = published[1] if published else "ramalama's size: unknown (no registry here)"
        if mb is None:
            row.note = "not built on this machine; " + row.note
        goal = GOALS_MB.get(backend)
        if goal is not None:
            row.goal = f"A ≤ {goal} MB"
            row.met = None if mb is None else mb <= goal
        if mb is not None and published:
            row.ratio = mb / published[0]
            row.ratio_text = f"{row.ratio:.2f}×"
        outcome.rows.append(row)
    return outcome
