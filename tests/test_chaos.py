"""Chaos: ``airflow dags test`` killed with SIGKILL (its whole process group, as a lost worker or
scheduler is) at each boundary of a night, on each provider; then the next night runs.

The kill points, each made certain rather than hoped for:

- ``after_create``: the provider has created the job, and its answer is held back (the
  emulator's ``slow_responses``), so the ledger never hears of it; killed once the emulator holds
  the job.
- ``during_wait``: the job runs for several seconds; killed while the wait task polls it.
- ``during_collect``: killed inside the collect task, with the results read and the ledger's
  records table locked (by the test, in PostgreSQL) so nothing of them is written yet.
- ``during_publish``: killed inside the publish task, blocked the same way (on the audit table,
  which the quality gate before it does not write).

After the next night: exactly one provider job per planned job (creates counted at the
emulator), every record published at most once (sink and audit), nothing left ``queued`` or
``submitted``, and the ledger's counts equal those of two clean nights (the ``clean`` case).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select, text

from batch_ai.ledger import tables as t
from batch_ai.localenv import dags_test_command
from conftest import empty_ledger_url
from sample_data.tickets import write_day
from test_e2e_ticket_summaries import DAY, Run

pytestmark = pytest.mark.e2e

NEXT = (date.fromisoformat(DAY) + timedelta(days=1)).isoformat()
ROWS = 120  # 100 valid tickets a night: Bedrock's minimum job size
#: The ledger after two clean nights of ROWS rows (the ``clean`` case proves it): every valid
#: ticket published; the malformed rows dead letters (the same 8 both nights, kept once).
EXPECTED = {"published": 200, "dead_letter": 8}
#: Where each provider's create call goes (matched against the path after the provider prefix).
CREATE = {
    "openai": r"^/v1/batches$",
    "anthropic": r"^/v1/messages/batches$",
    "vertex": r"batchPredictionJobs$",
    "bedrock": r"^/model-invocation-job$",
}
#: Each kill point's ledger: the two that freeze the run with a table lock need PostgreSQL's
#: table-level locks (SQLite's one lock would stop the run's reads too); the others use SQLite.
BACKEND = {
    "clean": "sqlite",
    "after_create": "sqlite",
    "during_wait": "sqlite",
    "during_collect": "postgresql",
    "during_publish": "postgresql",
}
CASES = [("openai", "clean")] + [
    (p, k) for p in CREATE for k in ("after_create", "during_wait", "during_collect", "during_publish")
]


class Night:
    """One ``airflow dags test`` in a process group of its own, its output read as it comes."""

    def __init__(self, run: Run, day: str):
        run.runs += 1
        self.log = run.home / f"night-{run.runs}-{day}.log"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            dags_test_command(run.workload, day),
            env=run.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with open(self.log, "w") as out:
            for line in self.proc.stdout:
                self.lines.append(line)
                out.write(line)

    def saw(self, text_: str) -> bool:
        return any(text_ in line for line in list(self.lines))

    def wait_for(self, what, timeout: float = 180, label: str = "") -> None:
        check = (lambda: self.saw(what)) if isinstance(what, str) else what
        deadline = time.monotonic() + timeout
        while not check():
            if self.proc.poll() is not None:
                raise AssertionError(f"the night ended before {label or what!r}:\n" + "".join(self.lines[-40:]))
            if time.monotonic() > deadline:
                raise AssertionError(f"no {label or what!r} in {timeout}s:\n" + "".join(self.lines[-40:]))
            time.sleep(0.1)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the whole group: nothing of the run survives
        self.proc.wait(timeout=30)
        self.reader.join(timeout=10)

    def finish(self, timeout: float = 600) -> str:
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        output = "".join(self.lines)
        assert self.proc.returncode == 0, output[-6000:]
        return output


def job_submitted(run: Run) -> bool:
    return bool(run.scalar(select(func.count()).select_from(t.jobs).where(t.jobs.c.status == "submitted")))


class TableLock:
    """A ledger table locked against writes (reads go on), from the test's own PostgreSQL
    connection, so the run blocks at its next write there."""

    def __init__(self, url: str, table: str = "batch_ai_records"):
        self.engine = sa.create_engine(url)
        self.conn = self.engine.connect()
        self.tx = self.conn.begin()
        self.conn.execute(text(f"lock table {table} in exclusive mode"))

    def release(self) -> None:
        self.tx.rollback()
        self.conn.close()
        self.engine.dispose()


def kill(run: Run, night: Night, point: str) -> None:
    if point == "after_create":
        night.wait_for(lambda: run.emulator.created(run.provider), label="a job created at the provider")
        night.kill()
    elif point == "during_wait":
        night.wait_for("starting task_id=job.wait")
        night.wait_for(lambda: job_submitted(run), label="the job submitted")
        time.sleep(1.5)
        night.kill()
    elif point == "during_collect":
        night.wait_for("starting task_id=job.wait")
        night.wait_for(lambda: job_submitted(run), label="the job submitted")
        lock = TableLock(run.ledger_url)
        try:
            night.wait_for("starting task_id=job.collect")
            time.sleep(1.5)  # reading the results, then blocked on its first write
            night.kill()
        finally:
            lock.release()
    elif point == "during_publish":
        night.wait_for("end task task_id=review")
        # the audit table: the quality gate writes its marks on the records, never an audit row;
        # the publish's first write per page is the audit of what it publishes
        lock = TableLock(run.ledger_url, "batch_ai_audit")
        try:
            night.wait_for("starting task_id=publish")
            time.sleep(1.5)
            night.kill()
        finally:
            lock.release()
    else:
        raise ValueError(point)


#: Faults that make each kill point last long enough to land in.
FAULTS = {
    "after_create": lambda p: {p: {"slow_responses": [{"method": "POST", "path": CREATE[p], "seconds": 600}]}},
    "during_wait": lambda p: {p: {"time_scale": 6}},
}


@pytest.fixture(params=CASES, ids=[f"{p}-{k}" for p, k in CASES])
def chaos(request, airflow_home, tmp_path, emulator):
    provider, point = request.param
    data = tmp_path / "data"
    write_day(data, DAY, count=ROWS)
    write_day(data, NEXT, count=ROWS, first_id=200000)
    with empty_ledger_url(BACKEND[point], tmp_path) as url:
        run = Run(airflow_home, url, data, emulator, provider=provider)
        run.with_spec(tmp_path / "spec")
        yield run, point
        run.engine.dispose()


def test_a_night_killed_at_any_point_is_finished_by_the_next(chaos):
    run, point = chaos
    if point == "clean":
        run.dag(DAY)
    else:
        run.emulator.set_faults(FAULTS.get(point, lambda p: {})(run.provider))
        kill(run, Night(run, DAY), point)
        run.emulator.set_faults({})
    output = Night(run, NEXT).finish()
    report = run.report()

    # nothing stranded, nothing lost, the same end as two clean nights
    states = Counter(dict(run.rows(select(t.records.c.state, func.count()).group_by(t.records.c.state))))
    assert dict(states) == EXPECTED, output[-3000:]
    assert report["lost"] == 0 and not report["open_work"]["stranded"] and not report["open_work"]["running"]

    # exactly one provider job per planned job: the crash cost no second create
    submitted = [j for j in run.rows(select(t.jobs)) if j.provider_job_id]
    created = run.emulator.created(run.provider)
    assert len(created) == len(set(created)) == len(submitted), (created, [j.token for j in submitted])
    assert all(any(j.provider_job_id.endswith(c) for j in submitted) for c in created)

    # every record published at most once, in the sink and in the audit
    twice = run.scalar(
        select(func.count()).select_from(
            select(t.audit.c.record_id)
            .where(t.audit.c.to_state == "published")
            .group_by(t.audit.c.record_id)
            .having(func.count() > 1)
            .subquery()
        )
    )
    assert twice == 0
    sink = run.rows(text("select ticket_id, publish_status from ticket_summaries"))
    assert len(sink) == len({r.ticket_id for r in sink}) == EXPECTED["published"]
    assert {r.publish_status for r in sink} == {"published"}

    # the next night says what it took over, and from which run
    if point in ("after_create", "during_wait", "during_collect"):
        adopted = [a for a in report["adoption"] if a["action"] == "adopted"]
        assert len(adopted) == 1 and adopted[0]["from_run"] != report["run_id"], report["adoption"]
        assert "recovered from run" in output
    if point == "after_create":  # the job the provider had made was found by its token, not made again
        assert adopted[0]["why"].startswith("the provider had accepted it"), adopted
