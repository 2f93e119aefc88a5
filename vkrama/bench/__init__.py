"""The bench stage: a matrix of (backend, Vulkan driver) cells, each running llama-bench in
its own image with identical parameters, judged by what ggml says actually ran.

Modules: `matrix` (which cells a request asks for here), `plan` (cells and their
ContainerSpecs, pure), `stderr` (what ran), `measurements` (llama-bench JSON), `run`
(cells one after another), `hostload` (how busy the host was meanwhile), `powerwatch` (the
device's own power counters read around a cell), `energy` (what each test drew of it, and
J/token above idle; pure), `session` (the whole run, stored), `imports` (runs from other
machines, into this store), `tuned` (bench --tuned: each cell at its stack's tuned flags),
`split` (bench --rpc: a cell over ggml RPC workers). The serving
bench (`--serve`): `serving` (its cells), `remote` (`--url`: a server already running),
`drive` (one level: warm-up, load, verdict), `load` (the load generator), `arrivals` (when
each request is sent), `prompts` (prompts of a wanted length), `latency` (a level's
figures), `slo` (latency targets, goodput and the sweep that finds capacity). The output
check (`vkrama check`): `check` (its cells and verdicts), `check_store` (stored, and run
before a bench), `reference` (the cached CPU reference; starting and scoring a server),
`scoring` (teacher-forced distributions over HTTP), `divergence` (KL, top-1, the verdict;
pure).
Its records (CellResult, Measurement, statuses) live in `vkrama.results.records`, which
bench writes to; results never imports bench. Nothing here prints.
"""
