"""End to end through ``airflow dags test``: backfills with a new prompt version, dry runs and
record limits, and a nightly run and a backfill over the same records at the same time."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from sqlalchemy import func, select, text

from batch_ai.ledger import tables as t
from batch_ai.localenv import dags_test_command
from sample_data.tickets import write_day
from test_e2e_ticket_summaries import DAY, Run

pytestmark = pytest.mark.e2e


@pytest.fixture
def run(airflow_home, tmp_path, emulator):
    data = tmp_path / "data"
    write_day(data, DAY, count=120)
    r = Run(airflow_home, f"sqlite:///{tmp_path / 'ledger.sqlite'}", data, emulator)
    r.with_spec(tmp_path / "base", **{"quality_gate.max_invalid_rate": 1.0})
    yield r
    r.engine.dispose()


def submissions_per_record(run) -> dict[int, int]:
    a = t.audit.c
    return dict(run.rows(select(a.record_id, func.count()).where(a.to_state == "submitted").group_by(a.record_id)))


def test_invalid_outputs_wait_for_a_new_version_then_only_they_are_rerun(run):
    run.emulator.set_faults({"openai": {"seed": 4, "realtime_faults": False, "malformed": {"bad_enum": 0.12}}})
    run.dag()
    r = t.records.c
    invalid = {x.id for x in run.rows(select(r.id).where(r.state == "invalid_output"))}
    published = {x.id for x in run.rows(select(r.id).where(r.state == "published"))}
    assert invalid and len(invalid) + len(published) == 100
    run.emulator.set_faults({"openai": {}})
    jobs_before = len(run.batches())

    # a backfill of that day asking to rerun invalid outputs, with the same prompt: nothing is sent
    output = run.dag("2026-11-26", conf={"date_from": DAY, "rerun_states": ["invalid_output"]})
    assert "not rerun: the prompt and schema versions are the ones they failed with" in output
    assert len(run.batches()) == jobs_before
    assert {x.id for x in run.rows(select(r.id).where(r.state == "invalid_output"))} == invalid

    # with prompt v2: exactly the invalid ones are rerun, in one new job, and published
    run.dag("2026-11-27", conf={"date_from": DAY, "rerun_states": ["invalid_output"], "prompt_version": "v2"})
    assert len(run.batches()) == jobs_before + 1
    report = run.report()
    assert report["prompt_version"] == "v2" and [j["records"] for j in report["jobs"]] == [len(invalid)]
    now = {
        x.id: (x.state, x.prompt_version)
        for x in run.rows(select(r.id, r.state, r.prompt_version).where(r.custom_id.is_not(None)))
    }
    assert {i for i, v in now.items() if v == ("published", "v2")} == invalid
    assert {i for i, v in now.items() if v == ("published", "v1")} == published
    sent = submissions_per_record(run)
    assert {sent[i] for i in invalid} == {2} and {sent[i] for i in published} == {1}
    sink = dict(
        run.rows(text("select record_id, prompt_version from ticket_summaries where publish_status = 'published'"))
    )
    assert len(sink) == 100 and {sink[i] for i in invalid} == {"v2"}


def test_dry_run_changes_nothing_and_a_record_limit_holds_the_rest(run):
    output = run.dag(conf={"dry_run": True})
    assert "batch-ai dry run: nothing was submitted or changed" in output
    assert "would submit 100 record(s) in 1 job(s) with prompt v1" in output
    assert run.batches() == [] and run.scalar(select(func.count()).select_from(t.records)) == 0

    run.dag(conf={"record_limit": 30})
    report = run.report()
    assert report["states"]["published"] == 30 and report["states"]["queued"] == 70 and report["lost"] == 0
    assert [j["records"] for j in report["jobs"]] == [30]
    # the sink shows the rest as pending, not as missing
    assert run.scalar(text("select count(*) from ticket_summaries where publish_status = 'pending'")) == 70


def test_a_nightly_run_and_a_backfill_at_the_same_time_submit_and_publish_each_record_once(
    airflow_template, tmp_path, emulator, postgres_url
):
    from conftest import empty_ledger_url

    data = tmp_path / "data"
    write_day(data, DAY, count=300)
    with empty_ledger_url("postgresql", tmp_path) as ledger_url:
        procs = []
        # separate Airflow homes (each its own metadata DB), one ledger on PostgreSQL
        for name, day, conf in (
            ("nightly", DAY, None),
            ("backfill", "2026-11-28", {"date_from": DAY, "rerun_states": ["provider_error"]}),
        ):
            home = tmp_path / name
            home.mkdir()
            shutil.copy(airflow_template, home / "airflow.db")
            r = Run(home, ledger_url, data, emulator)
            r.with_spec(tmp_path / f"spec-{name}")
            log = open(home / "run.log", "w")
            procs.append(
                (
                    r,
                    log,
                    subprocess.Popen(
                        dags_test_command("ticket_summaries", day, conf),
                        env=r.env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ),
                )
            )
        for r, log, proc in procs:
            assert proc.wait(timeout=600) == 0, (r.home / "run.log").read_text()[-5000:]
            log.close()
        run = procs[0][0]
        records = run.scalar(select(func.count()).select_from(t.records).where(t.records.c.state != "dead_letter"))
        assert records == 280  # 300 rows less the sample data's dead letters and duplicates
        sent = submissions_per_record(run)
        assert len(sent) == records and set(sent.values()) == {1}, "a record was submitted twice"
        a = t.audit.c
        published = dict(
            run.rows(select(a.record_id, func.count()).where(a.to_state == "published").group_by(a.record_id))
        )
        assert len(published) == records and set(published.values()) == {1}, "a record was published twice"
        jobs = run.rows(select(t.jobs.c.run_id, t.jobs.c.record_count).where(t.jobs.c.provider_job_id.is_not(None)))
        assert sum(j.record_count for j in jobs) == records
        assert run.scalar(text("select count(*) from ticket_summaries where publish_status = 'published'")) == records
        for r, _, _ in procs:
            r.engine.dispose()
