"""vkrama's benchmarks: each comparison runs vkrama (A) and a reference (B) side by side.

Stage: outside the pipeline; it measures the installed `vkrama` command as a user runs it
(subprocesses, real podman, real images, real llama.cpp, loopback servers) against the raw
tools and against ramalama. Speed is measured here and never asserted in tests. Must not
touch vkrama's own state directory: every run uses its own VKRAMA_HOME under
benchmarks/.cache/. `python -m benchmarks --help` tells how to run it.
"""
