"""A real deployment, not ``airflow dags test``: ``python -m batch_ai stack`` starts the
api-server, scheduler, dag-processor, triggerer and a Celery worker (redis as the broker) on
PostgreSQL, with the emulator; the test drives it through the REST API with the bodies the UI
sends. One workload, small data.

What it proves: the nightly DAG, unpaused, runs on schedule and succeeds; a run triggered with no
logical date, and one with params (a dry run), succeed; a 3-day backfill created through
``POST /api/v2/backfills`` runs each day once; the wait task is ``deferred`` while the job runs;
the Celery worker executes the tasks; a worker killed during the wait and started again still
ends with every record published once; the outputs that came back invalid are rerun, exactly
they, with prompt v2 (the README's rerun command, through the REST API).
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from batch_ai.ledger import tables as t
from sample_data.tickets import write_day
from stacked import DAG, Api, published_once

# one stack for this module and test_ui_browser.py (runs after this one, on the same stack)
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("stack")]

ROWS = 30


def test_the_nightly_dag_on_a_real_deployment_with_celery(deployment):
    stack, state = deployment
    data = Path(state["env"]["BATCH_AI_DATA_DIR"])
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in range(1, 6)]  # yesterday first
    for n, day in enumerate(days):
        write_day(data, day, count=ROWS, first_id=100_000 + 1_000 * n)  # each day its own tickets
    api = Api(state["api"], stack)

    # unpaused, the scheduler runs the latest complete night at once (catchup is off)
    api("PATCH", f"/dags/{DAG}", json={"is_paused": False})
    deadline = time.monotonic() + 120
    while not (scheduled := [r for r in api.runs() if r["run_type"] == "scheduled"]):
        assert time.monotonic() < deadline, "no scheduled run"
        time.sleep(1)
    api.wait(scheduled[0]["dag_run_id"])
    first, most = published_once(state["db"])
    assert first > 0 and most == 1

    # a run with no logical date reads the last complete day (the same night): nothing new
    manual = api.trigger()
    assert api("GET", f"/dags/{DAG}/dagRuns/{manual}")["logical_date"] is None
    api.wait(manual)
    assert published_once(state["db"]) == (first, 1)
    api.wait(api.trigger({"dry_run": True}))  # with params, from the form
    assert published_once(state["db"]) == (first, 1)

    # a 3-day backfill, as the UI's Backfill dialog creates it: each day once
    start, end = date.fromisoformat(days[3]), date.fromisoformat(days[1])
    backfill = api(
        "POST",
        "/backfills",
        json={
            "dag_id": DAG,
            "from_date": f"{start}T02:00:00Z",
            "to_date": f"{end}T02:00:00Z",
            "run_backwards": False,
            "dag_run_conf": {},
            "reprocess_behavior": "none",
            "max_active_runs": 1,
        },
    )
    deadline = time.monotonic() + 420
    while api("GET", f"/backfills/{backfill['id']}")["completed_at"] is None:
        assert time.monotonic() < deadline, f"backfill not done: {[(r['run_id'], r['state']) for r in api.runs()]}"
        time.sleep(2)
    filled = [r for r in api.runs() if r["run_type"] == "backfill"]
    assert sorted(r["logical_date"][:10] for r in filled) == [days[3], days[2], days[1]]
    assert {r["state"] for r in filled} == {"success"}

    # a job that runs ~15 s: the wait is deferred (no worker slot); the worker dies meanwhile
    # (and a few answers off the schema, for the rerun below)
    faults = {"openai": {"time_scale": 10, "seed": 4, "realtime_faults": False, "malformed": {"bad_enum": 0.12}}}
    httpx.put(f"{state['emulator']}/_emulator/faults", json=faults).raise_for_status()
    before, _ = published_once(state["db"])
    run_id = api.trigger({"date_from": days[4]})
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while "job.wait[0]:deferred" not in seen:
        assert time.monotonic() < deadline, f"the wait was never deferred: {sorted(seen)}"
        seen.update(f"{k}:{v}" for k, v in api.tasks(run_id).items())
        time.sleep(0.5)
    stack.kill("worker")
    stack.start("worker")
    api.wait(run_id, seen=seen)
    after, most = published_once(state["db"])
    assert after > before and most == 1, "the day's records published, each once"
    r = t.records.c
    invalid = set(rows(state["db"], sa.select(r.id).where(r.state == "invalid_output")))
    assert invalid, "the emulator's faults made some answers invalid"

    # the README's rerun: those invalid outputs again, with prompt v2, through the REST API
    httpx.put(f"{state['emulator']}/_emulator/faults", json={"openai": {}}).raise_for_status()
    api.wait(api.trigger({"date_from": days[4], "rerun_states": ["invalid_output"], "prompt_version": "v2"}))
    now = dict(rows(state["db"], sa.select(r.id, r.prompt_version).where(r.state == "published")))
    assert {i for i, version in now.items() if version == "v2"} == invalid, "exactly the invalid ones, with v2"
    assert published_once(state["db"])[1] == 1
    open_records = rows(state["db"], sa.select(r.id).where(r.state.in_(["queued", "submitted", "completed"])))
    assert open_records == [], "nothing left queued, submitted or unpublished"

    worker_log = (stack.dir / "worker.log").read_text()
    assert worker_log.count("Executing workload in Celery") >= 20, "the Celery worker ran the tasks"


def rows(url: str, query) -> list:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = [row[0] if len(row) == 1 else tuple(row) for row in conn.execute(query)]
    engine.dispose()
    return found
