"""Stage tune: each stack's fastest llama-bench settings, searched within a budget
(`vkrama tune`), stored per GPU, driver, image and model, and used by `bench --tuned` and
`serve --backend best`.

Modules: `space` (which flags and values a stack accepts, pure), `noise` (scores and
Welch's test of "beyond noise", pure), `search` (the search, pure), `trials` (a trial as
llama-bench runs it, its rows as scores), `switches` (each stack's own environment
switches as dimensions), `session` (runs the trials as bench cells and
stores the outcome).
"""
