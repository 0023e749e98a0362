"""Submit, wait and collect against the emulator through the official SDK (no Airflow scheduler).

These drive the same pipeline functions and operators the DAG runs, with the ledger on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from sqlalchemy import select

from batch_ai import pipeline
from batch_ai.ledger import tables as t
from batch_ai.ledger.states import State
from batch_ai.operators.openai import OpenAIBatchSensor, OpenAIBatchSubmitOperator
from batch_ai.providers import get_adapter
from batch_ai.triggers.batch import BatchJobTrigger
from batch_ai.workloads import load_workload

DAY = "2026-11-25"


@pytest.fixture
def workload(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCH_AI_DATA_DIR", str(tmp_path / "data"))
    return load_workload("ticket_summaries")


def seed(tmp_path, n: int) -> None:
    path = tmp_path / "data" / "tickets" / f"closed_{DAY}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    bodies = ["I was charged twice, please refund the invoice.", "The app crashes with an error on login.", "My package never arrived."]
    path.write_text("".join(
        json.dumps({"ticket_id": f"T-{i}", "subject": f"Ticket {i}", "body": bodies[i % 3]}) + "\n" for i in range(n)
    ))


def planned(workload, ledger, tmp_path, n=6, run_id="run-1"):
    seed(tmp_path, n)
    run = pipeline.RunInfo(run_id=run_id, ds=DAY)
    pipeline.extract(workload, ledger, run)
    adapter = get_adapter("openai", workload.conn_id)
    return run, adapter, pipeline.plan(workload, ledger, adapter, run)


def batches(emulator):
    client = openai.OpenAI(api_key="k", base_url=emulator.settings["openai"]["base_url"])
    return list(client.batches.list(limit=100))


def record_states(ledger):
    with ledger.engine.connect() as conn:
        return dict(conn.execute(select(t.records.c.source_id, t.records.c.state)).all())


def wait_until_ended(adapter, job_id, timeout=30):
    trigger = BatchJobTrigger("openai", "openai_default", job_id, poll_interval=0.2, max_poll_interval=0.5, timeout=timeout)

    async def first_event():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first_event())


def test_submit_twice_leaves_one_batch(workload, ledger, openai_conn, tmp_path):
    run, adapter, tokens = planned(workload, ledger, tmp_path)
    assert len(tokens) == 1
    context = {"run_id": run.run_id, "ds": DAY}
    op = OpenAIBatchSubmitOperator(task_id="submit", workload="ticket_summaries", token=tokens[0])
    op.__dict__["ledger"] = ledger  # the operator's ledger, bound to this test's database
    first = op.execute(context)
    second = op.execute(context)  # as a retry or a cleared task would
    assert first == second and first.startswith("batch_")
    assert [b.id for b in batches(openai_conn)] == [first]
    assert set(record_states(ledger).values()) == {"submitted"}


def test_crash_after_provider_accepted_is_recovered_without_a_second_batch(workload, ledger, openai_conn, tmp_path):
    run, adapter, tokens = planned(workload, ledger, tmp_path)
    job = ledger.job(tokens[0])
    records = ledger.job_records(job.id, State.QUEUED)
    options = pipeline.request_options(workload)
    # the paid call succeeds, then the worker dies before the ledger hears of it
    created = adapter.submit(
        [adapter.build_request(f"r{r.id}-a1", pipeline.prompt_for(workload, r.input), options) for r in records],
        tokens[0],
        {},
    )
    assert ledger.job(tokens[0]).provider_job_id is None
    again = pipeline.submit(workload, ledger, adapter, tokens[0], run)
    assert again == created.provider_job_id
    assert len(batches(openai_conn)) == 1
    # and the records' custom ids match the lines the orphaned batch carries
    ended = wait_until_ended(adapter, again)
    assert ended["status"] == "completed"
    summary = pipeline.collect(workload, ledger, adapter, tokens[0], run)
    assert summary["completed"] == 6 and "unknown_custom_id" not in summary


def test_chunking_respects_the_request_limit(workload, ledger, openai_conn, tmp_path, monkeypatch):
    from batch_ai.workloads import BatchingSpec

    limited = workload.spec.model_copy(update={"batching": BatchingSpec(max_requests_per_job=4)})
    monkeypatch.setattr(workload, "spec", limited)
    run, adapter, tokens = planned(workload, ledger, tmp_path, n=10)
    assert len(tokens) == 3
    sizes = [ledger.job(tok).record_count for tok in tokens]
    assert sizes == [4, 4, 2]
    assert pipeline.plan(workload, ledger, adapter, run) == tokens  # re-planning the run adds nothing


@pytest.mark.parametrize(
    "faults, status, kind, done",
    [
        ({"job_outcome": "expired", "expire_done_fraction": 0.5}, "expired", "expired", 3),
        ({"job_outcome": "failed_validation"}, "failed", "job_failed", 0),
    ],
)
def test_every_terminal_status_moves_every_record(workload, ledger, openai_conn, tmp_path, faults, status, kind, done):
    openai_conn.set_faults({"openai": faults})
    run, adapter, tokens = planned(workload, ledger, tmp_path)
    job_id = pipeline.submit(workload, ledger, adapter, tokens[0], run)
    event = wait_until_ended(adapter, job_id)
    assert event["outcome"] == "ended" and event["status"] == status
    summary = pipeline.collect(workload, ledger, adapter, tokens[0], run)
    states = record_states(ledger)
    assert list(states.values()).count("completed") == done
    assert list(states.values()).count("provider_error") == 6 - done
    with ledger.engine.connect() as conn:
        kinds = set(conn.scalars(select(t.records.c.error_kind).where(t.records.c.state == "provider_error")))
    assert kinds == {kind}
    assert summary["status"] == status


def test_cancelled_job_ends_the_wait_and_keeps_partial_results(workload, ledger, openai_conn, tmp_path):
    openai_conn.set_faults({"openai": {"time_scale": 4}})
    run, adapter, tokens = planned(workload, ledger, tmp_path, n=8)
    job_id = pipeline.submit(workload, ledger, adapter, tokens[0], run)
    import time

    time.sleep(2.5)
    adapter.cancel(job_id)
    event = wait_until_ended(adapter, job_id)
    assert event["status"] == "cancelled"
    pipeline.collect(workload, ledger, adapter, tokens[0], run)
    states = list(record_states(ledger).values())
    assert states.count("completed") + states.count("provider_error") == 8 and states.count("provider_error") > 0


def test_collect_twice_changes_nothing_more(workload, ledger, openai_conn, tmp_path, monkeypatch):
    run, adapter, tokens = planned(workload, ledger, tmp_path)
    job_id = pipeline.submit(workload, ledger, adapter, tokens[0], run)
    wait_until_ended(adapter, job_id)
    keep_files = workload.spec.provider.model_copy(update={"delete_files_after_collect": False})
    monkeypatch.setattr(workload, "spec", workload.spec.model_copy(update={"provider": keep_files}))
    first = pipeline.collect(workload, ledger, adapter, tokens[0], run)
    second = pipeline.collect(workload, ledger, adapter, tokens[0], run)
    assert first["completed"] == 6
    assert second.get("already_collected") == 6 and "completed" not in second
    assert len(ledger.history(ledger.job_records(ledger.job(tokens[0]).id)[0].id)) == 3  # queued, submitted, completed


def test_sensor_without_deferral_pokes_until_the_end(workload, ledger, openai_conn, tmp_path):
    run, adapter, tokens = planned(workload, ledger, tmp_path)
    pipeline.submit(workload, ledger, adapter, tokens[0], run)
    sensor = OpenAIBatchSensor(task_id="wait", workload="ticket_summaries", token=tokens[0], deferrable=False)
    sensor.__dict__["ledger"] = ledger
    done = sensor.poke({})
    assert not done.is_done
    event = wait_until_ended(adapter, ledger.job(tokens[0]).provider_job_id)
    done = sensor.poke({})
    assert done.is_done and done.xcom_value["status"] == "completed" == event["status"]
