"""The command line: the only package that imports click.

Stage: the outer shell of the pipeline. Commands parse flags, build a typed request,
call one domain function and hand the result to `console`. No click context, params
dict or argparse-like namespace travels below this package.

Modules: `root` (the `vkrama` group, its lazily imported subcommands, `main`), `app` (the
global flags and the engine they open), `flags` and `serve_flags` (flags shared by several
commands), `types` (the one grammar of comma lists and durations, and the refusal of a flag
a command would ignore), `console` (tables, JSON, the plan a --dry-run prints), `progress` (the
console's Reporter: build lines, download bars, retries), `reference` (docs/cli.md from
every `--help`), and one module per command family: `images`, `info`, `config`,
`devices` (devices, doctor), `models` (pull, list, inspect, rm), `serve`, `servers` (ps,
stop, logs), `rpc` (rpc-worker), `run`, `bench`, `check`, `results`, `tune`. This file only
re-exports.
"""

from vkrama.cli.root import COMMANDS, cli, main

__all__ = ["COMMANDS", "cli", "main"]
