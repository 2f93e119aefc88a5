"""The results stage: bench runs stored in SQLite, compared, ranked.

`best(settings, model_sha256, gpu_key, metric)` is what `serve --backend best` calls;
`gpu_key(profile, gpu)` computes the key the same way bench stores it.
"""

from vkrama.results.ranking import BestCell, Change, Verdict, best, compare, gpu_key, verdicts
from vkrama.results.store import (
    RunDetail,
    RunInfo,
    RunRecord,
    add_cell,
    finish_run,
    get_run,
    list_runs,
    start_run,
)

__all__ = [
    "BestCell",
    "Change",
    "RunDetail",
    "RunInfo",
    "RunRecord",
    "Verdict",
    "add_cell",
    "best",
    "compare",
    "finish_run",
    "get_run",
    "gpu_key",
    "list_runs",
    "start_run",
    "verdicts",
]
