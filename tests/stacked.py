"""The local deployment (``python -m batch_ai stack``) the deployment and browser tests share:
one stack per test session worker (both test modules are one xdist group), its REST API with
a real login, and what the ledger says about publishing."""

from __future__ import annotations

import os
import shutil
import time
import uuid

import httpx
import pytest
import sqlalchemy as sa

from batch_ai import stack as stacking
from batch_ai.ledger import tables as t
from batch_ai.localenv import free_port

DAG = "ticket_summaries"


def required_binary(name: str, package: str) -> str:
    """A system binary the test needs: skipped with the reason where it is missing, failed under CI."""
    found = shutil.which(name)
    if not found:
        message = f"{name} is not installed (Debian's {package}; `make test` installs it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def start(tmp_dir, pg_url: str):
    """Bring a stack up on a database of its own; returns (stack, state, drop) where ``drop``
    stops it and drops its database."""
    server = pg_url.rsplit("/", 1)[0]
    database = f"batch_ai_deploy_{uuid.uuid4().hex[:8]}"
    stack = stacking.Stack(tmp_dir / "stack")
    state = stack.up(pg=server, database=database, port=free_port())

    def drop():
        stack.down()
        engine = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'drop database if exists "{database}" with (force)'))
        engine.dispose()

    return stack, state, drop


class Api:
    """The stack's REST API, logged in as its admin (``POST /auth/token``, as the UI's login does)."""

    def __init__(self, base: str, stack: stacking.Stack):
        token = httpx.post(
            f"{base}/auth/token",
            json={"username": stacking.ADMIN, "password": stacking.password(stack.dir)},
            timeout=30,
        )
        assert token.status_code == 201, token.text
        self.client = httpx.Client(
            base_url=f"{base}/api/v2",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=30,
        )

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
