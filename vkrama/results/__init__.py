"""The results stage: bench runs stored in SQLite, compared, ranked.

`best(settings, model_sha256, gpu_key, metric)` is what `serve --backend best` calls;
`gpu_key(profile, gpu)` computes the key the same way bench stores it.
"""

from vkrama.results.owner import RunOwner
from vkrama.results.owner import current as current_owner
from vkrama.results.ranking import BestCell, Change, Verdict, best, compare, gpu_key, verdicts
from vkrama.results.store import (
    ABANDONED,
    RunDetail,
    RunInfo,
    RunRecord,
    abandon_dead_runs,
    abandoned_tokens,
    add_cell,
    finish_run,
    get_run,
    list_runs,
    start_run,
)

__all__ = [
    "ABANDONED",
    "BestCell",
    "Change",
    "RunDetail",
    "RunInfo",
    "RunOwner",
    "RunRecord",
    "Verdict",
    "abandon_dead_runs",
    "abandoned_tokens",
    "add_cell",
    "best",
    "compare",
    "current_owner",
    "finish_run",
    "get_run",
    "gpu_key",
    "list_runs",
    "start_run",
    "verdicts",
]
