"""A real deployment, not ``airflow dags test``: ``python -m batch_ai stack`` starts the
api-server, scheduler, dag-processor, triggerer and a Celery worker (redis as the broker) on
PostgreSQL, with the emulator; the test drives it through the REST API with the bodies the UI
sends. One workload, small data.

What it proves: the nightly DAG, unpaused, runs on schedule and succeeds; a run triggered with no
logical date, and one with params (a dry run), succeed; a 3-day backfill created through
``POST /api/v2/backfills`` runs each day once; the wait task is ``deferred`` while the job runs;
the Celery worker executes the tasks; a worker killed during the wait and started again still
ends with every record published once.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from batch_ai import stack as stacking
from batch_ai.ledger import tables as t
from batch_ai.localenv import free_port
from conftest import PG_URL, _postgres_or_skip
from sample_data.tickets import write_day

pytestmark = pytest.mark.e2e

DAG = "ticket_summaries"
ROWS = 30


@pytest.fixture
def deployment(tmp_path):
    _postgres_or_skip()
    if not shutil.which("redis-server"):
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is missing: `make test` installs Debian's redis-server (as root)")
        pytest.skip("redis-server is not installed (Debian's redis-server; `make test` installs it as root)")
    server = PG_URL.rsplit("/", 1)[0]
    database = f"batch_ai_deploy_{uuid.uuid4().hex[:8]}"
    stack = stacking.Stack(tmp_path / "stack")
    state = stack.up(pg=server, database=database, port=free_port())
    try:
        yield stack, state
    finally:
        stack.down()
        engine = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'drop database if exists "{database}" with (force)'))
        engine.dispose()


class Api:
    def __init__(self, base: str):
        self.client = httpx.Client(base_url=f"{base}/api/v2", timeout=30)

    def __call__(self, method: str, path: str, **kw):
        r = self.client.request(method, path, **kw)
        assert r.is_success, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json()

    def runs(self) -> list[dict]:
        return self("GET", f"/dags/{DAG}/dagRuns", params={"limit": 100})["dag_runs"]

    def tasks(self, run_id: str) -> dict[str, str]:
        tis = self("GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances", params={"limit": 100})["task_instances"]
        return {ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"] for ti in tis}

    def wait(self, run_id: str, timeout: float = 240, seen: set | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self("GET", f"/dags/{DAG}/dagRuns/{run_id}")
            if seen is not None:
                seen.update(f"{task}:{state}" for task, state in self.tasks(run_id).items())
            if run["state"] in ("success", "failed"):
                assert run["state"] == "success", f"{run_id} failed: {self.tasks(run_id)}"
                return run
            time.sleep(1)
        raise AssertionError(f"{run_id} did not end in {timeout}s: {self.tasks(run_id)}")

    def trigger(self, conf: dict | None = None) -> str:
        # the body the UI's Trigger form sends, its logical date cleared
        return self("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": None, "conf": conf or {}})["dag_run_id"]


def published_once(url: str) -> tuple[int, int]:
    """(records published, the most times any record was published)."""
    engine = sa.create_engine(url)
    a = t.audit.c
    with engine.connect() as conn:
        per_record = (
            sa.select(a.record_id, sa.func.count().label("n")).where(a.to_state == "published").group_by(a.record_id)
        ).subquery()
        count, most = conn.execute(sa.select(sa.func.count(), sa.func.max(per_record.c.n))).one()
    engine.dispose()
    return count, most or 0


def test_the_nightly_dag_on_a_real_deployment_with_celery(deployment):
    stack, state = deployment
    data = Path(state["env"]["BATCH_AI_DATA_DIR"])
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in range(1, 6)]  # yesterday first
    for n, day in enumerate(days):
        write_day(data, day, count=ROWS, first_id=100_000 + 1_000 * n)  # each day its own tickets
    api = Api(state["api"])

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
    httpx.put(f"{state['emulator']}/_emulator/faults", json={"openai": {"time_scale": 10}}).raise_for_status()
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
    engine = sa.create_engine(state["db"])
    with engine.connect() as conn:
        open_records = conn.scalar(
            sa.select(sa.func.count()).where(t.records.c.state.in_(["queued", "submitted", "completed"]))
        )
    engine.dispose()
    assert open_records == 0, "nothing left queued, submitted or unpublished"

    worker_log = (stack.dir / "worker.log").read_text()
    assert worker_log.count("Executing workload in Celery") >= 20, "the Celery worker ran the tasks"
