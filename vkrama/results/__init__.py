"""The results stage: bench records, stored in SQLite, compared, ranked, reported.

Modules: `records` (CellResult, Measurement, the Status enums: what bench writes),
`levels` (a serving bench's records per level), `energy` (what a test or a level drew),
`db` (the SQLite file), `owner` (which
process owns a running run), `ranking` (compare, best), `report` (tables and exports),
`serve_report` (a serving bench's), `scoreboard` (the llama.cpp scoreboards' table),
`chart`, `serve_chart` (a serving run against load), `energy_chart` (t/s against J/token)
and `html` (charts and the
self-contained page), `tunings` (`vkrama tune`'s outcome per stack), `checks` (the output
check's verdict per stack).
`best(settings, model_sha256, gpu_key, metric)` is what `serve --backend best` calls, with
the key `HardwareProfile.gpu_key(gpu)` gives, as bench stores it. Must not import
bench or serve (they import this), print, or talk to podman.
"""

from vkrama.results.db import (
    RunDetail,
    RunInfo,
    RunRecord,
    abandon_dead_runs,
    abandoned_tokens,
    add_cell,
    discard_run,
    finish_run,
    get_run,
    list_runs,
    start_run,
)
from vkrama.results.owner import RunOwner
from vkrama.results.owner import current as current_owner
from vkrama.results.ranking import (
    CAPACITY,
    JOULES,
    SERVE_METRIC,
    BestCell,
    Change,
    Verdict,
    best,
    compare,
    verdicts,
)
from vkrama.results.records import CellResult, CellStatus, Measurement, RunStatus

__all__ = [
    "CAPACITY",
    "JOULES",
    "SERVE_METRIC",
    "BestCell",
    "CellResult",
    "CellStatus",
    "Change",
    "Measurement",
    "RunDetail",
    "RunInfo",
    "RunOwner",
    "RunRecord",
    "RunStatus",
    "Verdict",
    "abandon_dead_runs",
    "abandoned_tokens",
    "add_cell",
    "best",
    "compare",
    "current_owner",
    "discard_run",
    "finish_run",
    "get_run",
    "list_runs",
    "start_run",
    "verdicts",
]
