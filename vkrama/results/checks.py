"""Each stack's output check as `vkrama check` (or `bench` before it measures) found it.

Stage: results (the `checks` table of the results database). The check writes one
`OutputCheck` per stack it judged; `bench` reads the newest per model, GPU set, stack and
image to know whether a stack still needs checking and to keep a wrong one out of its
verdicts; `serve --backend best` skips a stack whose newest check is wrong. Must not import
bench or serve, print, or talk to podman.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from vkrama.config import Settings
from vkrama.results import db
from vkrama.results.records import OutputCheck

_KEYS = ("gpu_key", "model_sha256", "backend", "driver", "image_id", "verdict")


def _ran_with(server_args: tuple[str, ...], env: Mapping[str, str] | None) -> str:
    """The `server_args` column a check is found by: the arguments as a JSON list, as every
    check stored before environments were; with an environment (a tuned switch, --env) an
    object of both, so a check made with GGML_VK_DISABLE_F16=1 never stands for the
    stack's own."""
    if not env:
        return json.dumps(list(server_args))
    return json.dumps({"args": list(server_args), "env": dict(sorted(env.items()))})


def store(settings: Settings, check: OutputCheck) -> None:
    check = check if check.created else replace(check, created=db.now())
    record = {k: v for k, v in check.to_dict().items() if k not in (*_KEYS, "run_id", "created")}
    with db.connect(settings) as conn:
        conn.execute(
            "INSERT INTO checks (run_id, created, gpu_key, model_sha256, backend, driver,"
            " image_id, server_args, verdict, record) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                check.run_id,
                check.created,
                check.gpu_key,
                check.model_sha256,
                check.backend,
                check.driver or "",
                check.image_id,
                _ran_with(check.server_args, check.env),
                check.verdict,
                json.dumps(record),
            ),
        )


def newest(
    settings: Settings,
    model_sha256: str,
    gpu_key: str,
    server_args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
) -> dict[tuple[str, str, str], OutputCheck]:
    """(backend, driver or "", image id) -> its newest check of this model on this GPU set,
    made with these server arguments and this environment over the stack's own."""
    if not db.db_path(settings).exists():
        return {}
    with db.connect(settings) as conn:
        rows = conn.execute(
            "SELECT run_id, created, gpu_key, model_sha256, backend, driver, image_id, verdict,"
            " record FROM checks WHERE model_sha256 = ? AND gpu_key = ? AND server_args = ?"
            " ORDER BY id DESC",
            (model_sha256, gpu_key, _ran_with(server_args, env)),
        ).fetchall()
    found: dict[tuple[str, str, str], OutputCheck] = {}
    for row in rows:
        check = _check(row)
        found.setdefault((check.backend, check.driver or "", check.image_id), check)
    return found


def of_run(settings: Settings, run_id: int) -> list[OutputCheck]:
    """The checks a bench run made or relied on, in the order they were stored."""
    if not db.db_path(settings).exists():
        return []
    with db.connect(settings) as conn:
        rows = conn.execute(
            "SELECT run_id, created, gpu_key, model_sha256, backend, driver, image_id, verdict,"
            " record FROM checks WHERE run_id = ? ORDER BY id",
            (run_id,),
        ).fetchall()
    return [_check(row) for row in rows]


def _check(row: tuple[Any, ...]) -> OutputCheck:
    run_id, created, gpu_key, sha, backend, driver, image_id, verdict, record = row
    return OutputCheck.from_dict(
        {
            **json.loads(record),
            "run_id": run_id,
            "created": created,
            "gpu_key": gpu_key,
            "model_sha256": sha,
            "backend": backend,
            "driver": driver or None,
            "image_id": image_id,
            "verdict": verdict,
        }
    )
