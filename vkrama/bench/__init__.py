"""The bench stage: a matrix of (backend, Vulkan driver) cells, each running llama-bench in
its own image with identical parameters, judged by what ggml says actually ran.

Modules: `matrix` (which cells a request asks for here), `plan` (cells and their
ContainerSpecs, pure), `stderr` (what ran), `measurements`
(llama-bench JSON), `run` (cells one after another), `session` (the whole run, stored).
Its records (CellResult, Measurement, statuses) live in `vkrama.results.records`, which
bench writes to; results never imports bench. Nothing here prints.
"""
