"""End to end: ``airflow dags test ticket_summaries`` against the emulator, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from sqlalchemy import create_engine, func, select, text

from batch_ai.ledger import tables as t
from batch_ai.localenv import airflow_env, dags_test
from provider_emulator.model import Reading
from sample_data.tickets import write_day

pytestmark = pytest.mark.e2e

DAY = "2026-11-25"


class Run:
    """One project-local Airflow, one ledger, one data directory, one emulator."""

    def __init__(self, home: Path, ledger_url: str, data_dir: Path, emulator):
        self.env = airflow_env(home, ledger_url=ledger_url, data_dir=data_dir, extra=emulator.airflow_env())
        self.home = home
        self.ledger_url = ledger_url
        self.emulator = emulator
        self.engine = create_engine(ledger_url)
        self.runs = 0

    def dag(self, day: str = DAY) -> str:
        self.runs += 1
        log = self.home / f"dags-test-{self.runs}.log"
        proc = dags_test(self.env, "ticket_summaries", day, log)
        output = log.read_text()
        assert proc.returncode == 0, output[-6000:]
        return output

    def scalar(self, query):
        with self.engine.connect() as conn:
            return conn.scalar(query)

    def rows(self, query):
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def report(self):
        return self.rows(select(t.runs.c.report).order_by(t.runs.c.id.desc()).limit(1))[0].report

    def batches(self):
        client = openai.OpenAI(api_key="k", base_url=self.emulator.settings["openai"]["base_url"])
        return list(client.batches.list(limit=100))


@pytest.fixture
def run(airflow_home, ledger_url, tmp_path, emulator):
    data = tmp_path / "data"
    write_day(data, DAY, count=120)
    r = Run(airflow_home, ledger_url, data, emulator)
    yield r
    r.engine.dispose()


def source_rows(data_dir: Path) -> list[str]:
    return (data_dir / "tickets" / f"closed_{DAY}.jsonl").read_text().splitlines()


def test_clean_run_publishes_every_valid_record_and_reruns_are_no_ops(run, tmp_path):
    run.dag()
    report = run.report()
    states = report["states"]
    assert report["extracted"] == 120 and report["lost"] == 0
    assert states["dead_letter"] == 8 and states["duplicate"] == 12
    assert states["published"] == 120 - 8 - 12  # every valid record, nothing else
    assert report["provider_job_ids"] and report["cost"]["batch_usd"] > 0
    assert report["cost"]["realtime_equivalent_usd"] == pytest.approx(2 * report["cost"]["batch_usd"], rel=1e-3)

    # dead letters carry a reason naming the row and the problem
    reasons = [r.error_message for r in run.rows(select(t.records.c.error_message).where(t.records.c.state == "dead_letter"))]
    assert any("no ticket_id" in r for r in reasons) and any("not valid JSON" in r for r in reasons)
    assert any("(ticket_id T-EMPTY-1): required field 'body'" in r for r in reasons)
    assert all(r.startswith("row ") for r in reasons)

    published = run.rows(text("select ticket_id, summary, category, record_id from ticket_summaries"))
    assert len(published) == states["published"] == len({p.ticket_id for p in published})
    assert not any("<" in p.summary for p in published)

    # the same interval again: nothing new submitted, nothing published twice
    batches_before = len(run.batches())
    run.dag()
    again = run.report()
    assert len(run.batches()) == batches_before
    assert again["provider_job_ids"] == [] and again["lost"] == 0
    assert again["states"]["published"] == states["published"]
    assert run.scalar(text("select count(*) from ticket_summaries")) == len(published)
    with_two_publishes = run.scalar(
        select(func.count()).select_from(
            select(t.audit.c.record_id).where(t.audit.c.to_state == "published").group_by(t.audit.c.record_id)
            .having(func.count() > 1).subquery()
        )
    )
    assert with_two_publishes == 0


def test_faults_route_each_record_to_its_state(run, tmp_path):
    run.emulator.set_faults({
        "openai": {
            "seed": 5,
            "shuffle": True,
            "realtime_faults": False,  # keep the sample step out of it: this test is about batch lines
            "line_error_rate": 0.08,
            "malformed": {"non_json": 0.06, "html": 0.08, "bad_enum": 0.05, "wrong_id": 0.05, "overlong": 0.04},
        }
    })
    run.dag()
    report = run.report()
    assert report["lost"] == 0
    fault_log = run.emulator.fault_log()["openai"]
    rows = run.rows(select(t.records.c.custom_id, t.records.c.state, t.records.c.error_kind, t.records.c.source_id, t.records.c.input)
                    .where(t.records.c.custom_id.is_not(None)))
    assert len(rows) == 100
    expected = {"line_error": "provider_error", "non_json": "invalid_output", "html": "invalid_output",
                "bad_enum": "invalid_output", "wrong_id": "invalid_output", "overlong": "invalid_output"}
    # sample calls are logged by request text, batch lines by custom id: take the batch ones
    faulted = {cid: f for cid, f in fault_log.items() if cid.startswith("r")}
    assert set(faulted.values()) == set(expected)  # every fault kind happened at least once
    for r in rows:
        assert r.state == expected.get(faulted.get(r.custom_id), "published"), (r.custom_id, faulted.get(r.custom_id), r.state)
    assert {r.error_kind for r in rows if r.state == "provider_error"} == {"server_error"}

    # HTML output is never published; every published row is its own ticket's answer (order was shuffled)
    published = {p.ticket_id: p for p in run.rows(text("select ticket_id, summary from ticket_summaries"))}
    html_ids = {r.source_id for r in rows if faulted.get(r.custom_id) == "html"}
    assert html_ids and not html_ids & set(published)
    inputs = {r.source_id: r.input for r in rows}
    for ticket_id, p in published.items():
        ticket = inputs[ticket_id]
        assert p.summary.split(".")[0] in Reading(f"<input>\nSubject: {ticket['subject']}\n{ticket['body']}\n</input>").text


def test_dag_test_run_fails_loudly_on_a_missing_source_file(run):
    proc = dags_test(run.env, "ticket_summaries", "2026-11-20", run.home / "missing.log")
    output = (run.home / "missing.log").read_text()
    assert "closed_2026-11-20.jsonl for 2026-11-20 does not exist" in output
    assert output.rstrip().endswith("DagRun failed"), output[-2000:]
    assert run.batches() == []
