"""Submit, wait and collect on every provider, against the emulator through the official SDKs.

These drive the same stage functions and operators the DAG runs (no Airflow scheduler),
with the ledger on SQLite and PostgreSQL, and the workload switched between providers the way
the documented switch does it (``BATCH_AI_PROVIDER``).
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from batch_ai.ledger import tables as t
from batch_ai.ledger.states import State
from batch_ai.ledger.store import utcnow
from batch_ai.operators import job_operators
from batch_ai.providers import adapter_for
from batch_ai.providers.capabilities import capabilities
from batch_ai.providers.request_file import RequestFile
from batch_ai.stages import collect, intake, plan, realtime, submit
from batch_ai.stages.run import RunInfo
from batch_ai.triggers.batch import BatchJobTrigger
from batch_ai.workloads import load_workload
from conftest import empty_ledger_url

DAY = "2026-11-25"
# Every provider on SQLite; the provider-independent ledger code also on PostgreSQL, once.
CASES = [
    ("openai", "sqlite"),
    ("openai", "postgresql"),
    ("anthropic", "sqlite"),
    ("vertex", "sqlite"),
    ("bedrock", "sqlite"),
]


@pytest.fixture(params=CASES, ids=[f"{p}-{b}" for p, b in CASES])
def case(request):
    return request.param


@pytest.fixture
def provider(case):
    return case[0]


@pytest.fixture
def ledger_url(case, tmp_path):
    with empty_ledger_url(case[1], tmp_path) as url:
        yield url


@pytest.fixture
def workload(tmp_path, monkeypatch, provider, openai_conn):
    monkeypatch.setenv("BATCH_AI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BATCH_AI_PROVIDER", provider)
    load_workload.cache_clear()
    yield load_workload("ticket_summaries")
    load_workload.cache_clear()


def enough(provider: str, n: int) -> int:
    """At least the provider's minimum job size (Bedrock's 100)."""
    return max(n, capabilities().provider(provider).limits.min_requests_per_job)


def seed(tmp_path, n: int) -> None:
    path = tmp_path / "data" / "tickets" / f"closed_{DAY}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    bodies = [
        "I was charged twice, please refund the invoice.",
        "The app crashes with an error on login.",
        "My package never arrived.",
    ]
    path.write_text(
        "".join(
            json.dumps({"ticket_id": f"T-{i}", "subject": f"Ticket {i}", "body": bodies[i % 3]}) + "\n"
            for i in range(n)
        )
    )


def planned(workload, ledger, tmp_path, n=6, run_id="run-1"):
    seed(tmp_path, n)
    run = RunInfo(run_id=run_id, ds=DAY)
    intake.extract(workload, ledger, run)
    adapter = adapter_for(workload)
    return run, adapter, plan.plan(workload, ledger, adapter, run)


def record_states(ledger):
    with ledger.engine.connect() as conn:
        return dict(conn.execute(select(t.records.c.source_id, t.records.c.state)).all())


def wait_until_ended(adapter, job_id, timeout=30):
    deadline = (utcnow() + timedelta(seconds=timeout)).isoformat()
    trigger = BatchJobTrigger(
        adapter.name, adapter.conn_id, job_id, deadline, adapter.options, poll_interval=0.2, max_poll_interval=0.5
    )

    async def first_event():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first_event())


def test_submit_twice_leaves_one_job(workload, ledger, openai_conn, tmp_path, provider):
    n = enough(provider, 6)
    run, adapter, tokens = planned(workload, ledger, tmp_path, n=n)
    assert len(tokens) == 1
    context = {"run_id": run.run_id, "ds": DAY}
    submit_cls, _ = job_operators(provider)
    op = submit_cls(task_id="submit", workload="ticket_summaries", token=tokens[0])
    op.__dict__["ledger"] = ledger  # the operator's ledger, bound to this test's database
    first = op.execute(context)
    second = op.execute(context)  # as a retry or a cleared task would
    assert first == second
    assert len(openai_conn.jobs(provider)) == 1
    assert set(record_states(ledger).values()) == {"submitted"}


def test_crash_after_provider_accepted_is_recovered_without_a_second_job(
    workload, ledger, openai_conn, tmp_path, provider
):
    n = enough(provider, 6)
    run, adapter, tokens = planned(workload, ledger, tmp_path, n=n)
    job = ledger.job(tokens[0])
    records = ledger.job_records(job.id, State.QUEUED)
    options = workload.request_options()
    # the paid call succeeds, then the worker dies before the ledger hears of it
    created = adapter.submit(
        RequestFile.of(adapter.build_request(f"r{r.id}-a1", workload.prompt_for(r.input), options) for r in records),
        tokens[0],
        model=workload.spec.provider.model,
        labels={},
    )
    assert ledger.job(tokens[0]).provider_job_id is None
    again = submit.submit(workload, ledger, adapter, tokens[0], run)
    assert again == created.provider_job_id
    assert len(openai_conn.jobs(provider)) == 1
    # the records' custom ids match the lines the orphaned job carries
    assert wait_until_ended(adapter, again)["job_status"] == "completed"
    summary = collect.collect(workload, ledger, adapter, tokens[0], run)
    assert summary["completed"] == n and "unknown_custom_id" not in summary


def test_chunking_respects_the_request_limit(workload, ledger, openai_conn, tmp_path, monkeypatch, provider):
    from batch_ai.workloads import BatchingSpec

    minimum = enough(provider, 1)
    limit = max(4, minimum + minimum // 2)  # Bedrock: 150 a job, and no job under 100
    limited = workload.spec.model_copy(update={"batching": BatchingSpec(max_requests_per_job=limit)})
    monkeypatch.setattr(workload, "spec", limited)
    n = 2 * limit + max(2, minimum // 2)
    run, adapter, tokens = planned(workload, ledger, tmp_path, n=n)
    sizes = [ledger.job(tok).record_count for tok in tokens]
    assert sum(sizes) == n and all(minimum <= s <= limit for s in sizes) and len(sizes) == 3
    assert plan.plan(workload, ledger, adapter, run) == tokens  # re-planning the run adds nothing


@pytest.mark.parametrize(
    "faults, status, kinds, done_share",
    [
        ({"job_outcome": "expired", "expire_done_fraction": 0.5}, "expired", {"expired"}, 0.5),
        ({"job_outcome": "failed_validation"}, "failed", {"job_failed"}, 0.0),
    ],
)
def test_every_terminal_status_moves_every_record(
    workload, ledger, openai_conn, tmp_path, provider, faults, status, kinds, done_share
):
    openai_conn.set_faults({provider: {**faults, "min_records_per_job": 1} if provider == "bedrock" else faults})
    n = enough(provider, 6)
    run, adapter, tokens = planned(workload, ledger, tmp_path, n=n)
    job_id = submit.submit(workload, ledger, adapter, tokens[0], run)
    if provider == "anthropic" and status == "failed":
        # Anthropic validates a batch when it is created: the create is refused, nothing is paid,
        # and the ledger keeps the job as one the provider refused
        assert job_id == f"refused:{tokens[0]}" and openai_conn.jobs(provider) == []
        assert "could not be validated" in ledger.job(tokens[0]).details["refused"]
    else:
        event = wait_until_ended(adapter, job_id)
        assert event["status"] == "ended" and event["job_status"] == status
    summary = collect.collect(workload, ledger, adapter, tokens[0], run)
    states = list(record_states(ledger).values())
    assert states.count("completed") == int(n * done_share)
    assert states.count("provider_error") == n - int(n * done_share)
    with ledger.engine.connect() as conn:
        found = set(conn.scalars(select(t.records.c.error_kind).where(t.records.c.state == "provider_error")))
    assert found == kinds
    assert summary["status"] == status


def test_cancelled_job_ends_the_wait_and_keeps_partial_results(workload, ledger, openai_conn, tmp_path, provider):
    openai_conn.set_faults({provider: {"time_scale": 4}})
    n = enough(provider, 8)
    run, adapter, tokens = planned(workload, ledger, tmp_path, n=n)
    job_id = submit.submit(workload, ledger, adapter, tokens[0], run)
    import time

    time.sleep(2.5)
    adapter.cancel(job_id)
    event = wait_until_ended(adapter, job_id)
    assert event["job_status"] == "cancelled"
    collect.collect(workload, ledger, adapter, tokens[0], run)
    states = list(record_states(ledger).values())
    assert states.count("completed") + states.count("provider_error") == n
    assert 0 < states.count("provider_error") < n


def test_collect_twice_changes_nothing_more(workload, ledger, openai_conn, tmp_path, monkeypatch, provider):
    n = enough(provider, 6)
    run, adapter, tokens = planned(workload, ledger, tmp_path, n=n)
    job_id = submit.submit(workload, ledger, adapter, tokens[0], run)
    wait_until_ended(adapter, job_id)
    keep_files = workload.spec.provider.model_copy(update={"delete_files_after_collect": False})
    monkeypatch.setattr(workload, "spec", workload.spec.model_copy(update={"provider": keep_files}))
    first = collect.collect(workload, ledger, adapter, tokens[0], run)
    second = collect.collect(workload, ledger, adapter, tokens[0], run)
    assert first["completed"] == n and ledger.job(tokens[0]).status == "completed"
    assert second["jobs"] == [] and "completed" not in second  # a collected job is not read again
    # a collect that died after moving the records, before it could record the job's end, is
    # run again: it reads the results and moves (and pays for) nothing twice
    job = ledger.job(tokens[0])
    ledger.update_job(job.id, status="submitted")
    third = collect.collect(workload, ledger, adapter, tokens[0], run)
    assert third.get("already_collected") == n and "completed" not in third
    assert ledger.job(tokens[0]).cost_usd == pytest.approx(job.cost_usd)
    assert len(ledger.history(ledger.job_records(job.id)[0].id)) == 3  # queued, submitted, completed


def test_sensor_without_deferral_pokes_until_the_end(workload, ledger, openai_conn, tmp_path, provider):
    run, adapter, tokens = planned(workload, ledger, tmp_path, n=enough(provider, 6))
    submit.submit(workload, ledger, adapter, tokens[0], run)
    _, sensor_cls = job_operators(provider)
    sensor = sensor_cls(task_id="wait", workload="ticket_summaries", token=tokens[0], deferrable=False)
    sensor.__dict__["ledger"] = ledger
    context = {"run_id": run.run_id, "ds": DAY}
    assert not sensor.poke(context).is_done
    event = wait_until_ended(adapter, ledger.job(tokens[0]).provider_job_id)
    done = sensor.poke(context)
    assert done.is_done and done.xcom_value["status"] == "completed" == event["job_status"]


def staged_objects(emulator, provider: str) -> list[str]:
    """What the provider still holds for our jobs: files, batches or objects under the staging prefix."""
    s = emulator.settings[provider]
    if provider == "openai":
        import openai

        return [f.id for f in openai.OpenAI(api_key="k", base_url=s["base_url"]).files.list()]
    if provider == "anthropic":
        return emulator.jobs("anthropic")
    if provider == "vertex":
        from google.cloud import storage

        bucket, _, prefix = s["staging_uri"].removeprefix("gs://").partition("/")
        return [b.name for b in storage.Client(project=s["project"]).list_blobs(bucket, prefix=prefix)]
    import boto3

    bucket, _, prefix = s["staging_uri"].removeprefix("s3://").partition("/")
    s3 = boto3.client(
        "s3",
        endpoint_url=s["s3_endpoint_url"],
        region_name=s["region"],
        aws_access_key_id="k",
        aws_secret_access_key="k",
    )
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def test_collect_cleans_up_what_was_staged(workload, ledger, openai_conn, tmp_path, provider):
    run, adapter, tokens = planned(workload, ledger, tmp_path, n=enough(provider, 6))
    job_id = submit.submit(workload, ledger, adapter, tokens[0], run)
    wait_until_ended(adapter, job_id)
    assert staged_objects(openai_conn, provider)  # input (and results) are there before collection
    collect.collect(workload, ledger, adapter, tokens[0], run)
    assert staged_objects(openai_conn, provider) == []


@pytest.mark.parametrize("case", [("openai", "sqlite")], indirect=True, ids=["openai-sqlite"])
def test_an_interrupted_deadline_fallback_leaves_no_record_submitted(
    workload, ledger, openai_conn, tmp_path, monkeypatch
):
    """The provider becomes unreachable during the fallback: the series of real-time calls stops,
    and every record of the job ends in a state the next run takes up, none stuck in submitted."""
    import socket

    from batch_ai.workloads import DeadlineSpec, Workload

    run, adapter, (token,) = planned(workload, ledger, tmp_path, n=6)
    openai_conn.set_faults({"openai": {"time_scale": 100}})  # the job stays in progress
    submit.submit(workload, ledger, adapter, token, run)
    late = Workload(
        workload.spec.model_copy(update={"deadline": DeadlineSpec(hours=1, on_miss="realtime")}),
        workload.path,
        workload.root,
    )
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_DEFAULT",
        json.dumps(
            {
                "conn_type": "openai",
                "password": "emulator-key",
                "extra": {"openai_client_kwargs": {"base_url": f"http://127.0.0.1:{dead}/openai/v1", "max_retries": 0}},
            }
        ),
    )
    unreachable = adapter_for(late)
    summary = realtime.deadline_fallback(late, ledger, unreachable, token, run, utcnow())
    assert summary["records"] == 6 and summary["cancelled"] == []  # the cancel could not reach it either
    assert set(record_states(ledger).values()) == {"provider_error"}
    with ledger.engine.connect() as conn:
        kinds = set(conn.scalars(select(t.records.c.error_kind)))
    assert kinds == {"missing_result"}  # transient: the next run's retry rounds take them
    # the job's collect finds nothing left to move
    assert collect.collect(late, ledger, unreachable, token, run)["unanswered"] == 0
