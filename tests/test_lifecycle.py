"""The record life cycle below the DAG, on SQLite and PostgreSQL: review decisions, the
table sink's pending/published/rejected rows, newer results never overwritten by older ones,
the files sink, backfill reruns, and run params."""

from __future__ import annotations

import json
import re
import threading
from datetime import date

import pandas as pd
import pytest
from sqlalchemy import select, text

from batch_ai import review
from batch_ai.errors import StageError
from batch_ai.ledger import tables as t
from batch_ai.ledger.states import State
from batch_ai.ledger.store import Change, IntakeRow, Ledger, RecordKey
from batch_ai.publish import files, sql_table
from batch_ai.stages.run import RunParams
from batch_ai.workloads import load_workload

W = load_workload("ticket_summaries")
KEY = RecordKey("ticket_summaries", "v1", W.spec.provider.model, "v1")
SINK = W.spec.sink


def output(tid: str, **changes) -> dict:
    return {
        "ticket_id": tid,
        "summary": f"Summary of {tid}.",
        "category": "billing",
        "sentiment": "neutral",
        "language": "en",
        "action_items": [],
        **changes,
    }


def take_in(ledger, *ids, key=KEY, run="run1", day=date(2026, 11, 25), rerun=()):
    data = [
        IntakeRow(n, sid, {"ticket_id": sid, "subject": "s", "body": f"text {sid}"}, f"hash-{sid}", None, day)
        for n, sid in enumerate(ids, start=1)
    ]
    return ledger.intake(key, "openai", run, data, actor="test", rerun=rerun)


def answer(ledger, to: State, key=KEY, reason="answered", **by_source):
    """Move queued records through submitted to ``to`` with the given outputs."""
    with ledger.engine.connect() as conn:
        ids = dict(conn.execute(select(t.records.c.source_id, t.records.c.id).where(key.where())).all())
    ledger.transition([Change(ids[s], State.SUBMITTED, "sent", {"attempts": 1}) for s in by_source], actor="test")
    ledger.transition([Change(ids[s], to, reason, {"output": out}) for s, out in by_source.items()], actor="test")
    return ids


def sink_rows(ledger):
    with ledger.engine.connect() as conn:
        return {r.ticket_id: r for r in conn.execute(text("select * from ticket_summaries"))}


def test_review_decisions_publish_what_was_approved_or_edited_and_never_what_was_rejected(ledger):
    take_in(ledger, "A", "B", "C", "D")
    sql_table.mark_pending(ledger, KEY, SINK, W.output_schema)
    assert {k: r.publish_status for k, r in sink_rows(ledger).items()} == dict.fromkeys("ABCD", "pending")
    ids = answer(ledger, State.REVIEW_REQUIRED, reason="review rule", A=output("A"), B=output("B"), C=output("C"))
    answer(ledger, State.REVIEW_REQUIRED, reason="refused", D=None)
    assert [r["source_id"] for r in review.queue(ledger, "ticket_summaries")] == ["A", "B", "C", "D"]

    review.decide(ledger, ids["A"], "approve", "alice", note="looks right")
    review.decide(ledger, ids["B"], "reject", "bob")
    with pytest.raises(review.ReviewError, match="sentiment: 'furious' is not one of"):
        review.decide(ledger, ids["C"], "edit", "carol", output=output("C", sentiment="furious"))
    after = review.decide(ledger, ids["C"], "edit", "carol", output=output("C", summary="Corrected by hand."))
    assert after["state"] == "completed" and after["output"]["summary"] == "Corrected by hand."
    assert "changed summary" in after["history"][-1]["reason"] and after["history"][-1]["by"] == "reviewer:carol"
    with pytest.raises(review.ReviewError, match="no output to approve"):
        review.decide(ledger, ids["D"], "approve", "alice")
    with pytest.raises(review.ReviewError, match="is rejected, not waiting for review"):
        review.decide(ledger, ids["B"], "approve", "alice")
    with pytest.raises(review.ReviewError, match="reviewer's name"):
        review.decide(ledger, ids["D"], "reject", "  ")

    outcome = sql_table.publish(ledger, KEY, SINK, W.output_schema, "run2", "test")
    assert outcome["published"] == 2 and outcome["rejected_marked"] == 1
    rows = sink_rows(ledger)
    assert rows["A"].publish_status == "published" and rows["C"].summary == "Corrected by hand."
    assert rows["B"].publish_status == "rejected" and rows["B"].summary is None
    assert rows["D"].publish_status == "pending"  # still waiting for a person
    history = review.history(ledger, ids["A"])
    assert [(h["to"], h["by"]) for h in history] == [
        ("queued", "test"),
        ("submitted", "test"),
        ("review_required", "test"),
        ("completed", "reviewer:alice"),
        ("published", "test"),
    ]
    assert history[3]["reason"] == "approved by alice: looks right"


def test_a_decision_taken_meanwhile_is_refused_not_applied_twice(ledger):
    take_in(ledger, "A")
    ids = answer(ledger, State.REVIEW_REQUIRED, A=output("A"))
    results = []

    def decide(action):
        try:
            results.append(review.decide(ledger, ids["A"], action, "alice")["state"])
        except review.ReviewError as exc:
            results.append(str(exc))

    # approve and send back: both are allowed from where each reviewer stood, only one may land
    threads = [threading.Thread(target=decide, args=(a,)) for a in ("approve", "requeue")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    decided = [r for r in results if r in ("completed", "queued")]
    assert len(results) == 2 and len(decided) == 1, results  # both answered; one was refused
    assert "decided meanwhile" in next(r for r in results if r not in decided) or "not waiting" in str(results)
    decisions = [h for h in review.history(ledger, ids["A"]) if h["by"] == "reviewer:alice"]
    assert len(decisions) == 1


def test_an_older_result_never_replaces_a_newer_one_in_the_table(ledger):
    newer_key = RecordKey("ticket_summaries", "v2", KEY.model, "v1")
    take_in(ledger, "A", key=newer_key, run="nightly", day=date(2026, 11, 26))
    answer(ledger, State.COMPLETED, key=newer_key, A=output("A", summary="From the 26th."))
    assert sql_table.publish(ledger, newer_key, SINK, W.output_schema, "nightly", "test")["published"] == 1
    # a backfill of the 20th, at another version, finishes later
    take_in(ledger, "A", run="backfill", day=date(2026, 11, 20))
    answer(ledger, State.COMPLETED, A=output("A", summary="From the 20th."))
    outcome = sql_table.publish(ledger, KEY, SINK, W.output_schema, "backfill", "test")
    assert outcome == {"published": 0, "superseded": 1, "rejected_marked": 0, "table": "ticket_summaries"}
    assert sink_rows(ledger)["A"].summary == "From the 26th."
    with ledger.engine.connect() as conn:
        states = set(conn.scalars(select(t.records.c.state)))
    assert states == {"published"}  # both accounted for; the older one says it was superseded


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_files_sink_writes_one_file_per_publish_and_nothing_twice(ledger, tmp_path, fmt):
    sink = SINK.model_copy(update={"kind": "files", "table": None, "uri": f"file://{tmp_path}/out", "format": fmt})
    take_in(ledger, "A", "B")
    answer(ledger, State.COMPLETED, A=output("A", action_items=["call back"]), B=output("B"))
    run = "scheduled__2026-11-25T02:00:00+00:00"
    first = files.publish(ledger, KEY, sink, run, "test")
    assert first["published"] == 2 and re.search(
        rf"/scheduled__2026-11-25T02_00_00_00_00-[0-9a-f]{{10}}\.{fmt}$", first["file"]
    )
    assert files.publish(ledger, KEY, sink, run, "test") == {"published": 0, "file": None}
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == [first["file"].rsplit("/", 1)[-1]]  # no temporary file left
    # a record approved later in the same run gets a file of its own; the first stays whole
    take_in(ledger, "C")
    answer(ledger, State.COMPLETED, C=output("C"))
    second = files.publish(ledger, KEY, sink, run, "test")
    assert second["published"] == 1 and second["file"] != first["file"] and len(list((tmp_path / "out").iterdir())) == 2
    if fmt == "jsonl":
        rows = [json.loads(line) for line in written[0].read_text().splitlines()]
    else:
        rows = pd.read_parquet(written[0]).to_dict("records")
    assert sorted(r["ticket_id"] for r in rows) == ["A", "B"]
    assert {r["source_date"] for r in rows} == {"2026-11-25"}


def test_a_files_publish_killed_half_way_is_finished_or_undone_by_the_next(ledger, tmp_path):
    """A publish that died after writing its file is finished by the next publish (no second
    file); one that died before is undone (its records go to the next file)."""
    from airflow.sdk import ObjectStoragePath

    sink = SINK.model_copy(update={"kind": "files", "table": None, "uri": f"file://{tmp_path}/out", "format": "jsonl"})
    take_in(ledger, "A", "B", "C")
    ids = answer(ledger, State.COMPLETED, A=output("A"), B=output("B"), C=output("C"))
    out = tmp_path / "out"
    out.mkdir()
    # run-1 wrote down its publication of A and B, wrote the file, and died before moving the records
    with ledger.engine.begin() as conn:
        ledger.begin_publication(conn, KEY.workload, "run-1", f"file://{out}/run-1-a.jsonl", [ids["A"], ids["B"]])
    (out / "run-1-a.jsonl").write_text('{"ticket_id": "A"}\n{"ticket_id": "B"}\n')
    # run-2 wrote down C and died before its file existed
    with ledger.engine.begin() as conn:
        ledger.begin_publication(conn, KEY.workload, "run-2", f"file://{out}/run-2-c.jsonl", [ids["C"]])
    outcome = files.publish(ledger, KEY, sink, "run-3", "test")
    assert outcome["published"] == 1  # C, in run-3's own file; A and B stay in run-1's
    assert sorted(p.name for p in out.iterdir()) == sorted(["run-1-a.jsonl", outcome["file"].rsplit("/", 1)[-1]])
    with ledger.engine.connect() as conn:
        assert set(conn.scalars(select(t.records.c.state))) == {"published"}
    assert ledger.open_publications(KEY.workload) == []
    reasons = {h.reason for h in ledger.history(ids["A"]) if h.to_state == "published"}
    assert reasons == {
        f"written to file://{out}/run-1-a.jsonl by a publish of run run-1 that died before it could say so"
    }
    assert ObjectStoragePath(outcome["file"]).read_text().count("\n") == 1


def test_backfill_reruns_selected_states_and_invalid_outputs_only_with_a_new_version(ledger):
    take_in(ledger, "A", "B", "C")
    answer(ledger, State.INVALID_OUTPUT, A=output("A"))
    answer(ledger, State.PROVIDER_ERROR, B=None)
    answer(ledger, State.COMPLETED, C=output("C"))
    # same version: the provider error is rerun, the invalid output is not (it would fail again)
    again = take_in(ledger, "A", "B", "C", run="backfill1", rerun=[State.INVALID_OUTPUT, State.PROVIDER_ERROR])
    assert again["rerun"] == 1 and again["invalid_same_version"] == 1 and again["unchanged"] == 1
    # a new prompt version: only the selected states move, in place, to the new version
    v2 = RecordKey("ticket_summaries", "v2", KEY.model, "v1")
    moved = take_in(ledger, "A", "C", "D", key=v2, run="backfill2", rerun=[State.INVALID_OUTPUT])
    assert moved["rerun"] == 1 and moved["not_selected"] == 1 and moved["new"] == 1
    with ledger.engine.connect() as conn:
        now = {r.source_id: (r.prompt_version, r.state) for r in conn.execute(select(t.records))}
    assert now == {"A": ("v2", "queued"), "B": ("v1", "queued"), "C": ("v1", "completed"), "D": ("v2", "queued")}
    with ledger.engine.connect() as conn:
        attempts = dict(conn.execute(select(t.records.c.source_id, t.records.c.attempts)).all())
    assert attempts == {"A": 0, "B": 1, "C": 1, "D": 0}  # attempts count per idempotency key
    ledger.start_run("ticket_summaries", "backfill2")
    ledger.set_extracted("ticket_summaries", "backfill2", 3)
    assert ledger.run_accounting("ticket_summaries", "backfill2")["lost"] == 0
    reason = review.history(ledger, 1)[-1]["reason"]
    assert reason == "backfill: rerun of invalid_output with prompt v2, schema v1"


def test_concurrent_runs_plan_each_record_once(ledger_url):
    """Two runs planning the same queued records at once (PostgreSQL row locks; SQLite serializes)."""
    ledger = Ledger.connect(ledger_url)
    take_in(ledger, *[f"T{i}" for i in range(300)])
    barrier = threading.Barrier(2)
    planned: dict[str, list[int]] = {}

    def plan(run_id):
        own = Ledger.connect(ledger_url)

        class OneJob:  # takes every record it is given into one job
            def take(self, records):
                planned.setdefault(run_id, []).extend(r.id for r in records)
                return [], []

            def finish(self):
                # both runs hold their claims here at once (PostgreSQL); SQLite runs them one after the other
                barrier.wait(timeout=30) if ledger.is_postgres else None
                return [(f"job-{run_id}", planned[run_id])] if planned.get(run_id) else []

        planned[run_id] = []
        own.plan_jobs(KEY, "openai", run_id, OneJob())
        own.dispose()

    threads = [threading.Thread(target=plan, args=(r,)) for r in ("nightly", "backfill")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    both = planned["nightly"] + planned["backfill"]
    assert len(both) == len(set(both)) == 300, {k: len(v) for k, v in planned.items()}
    ledger.dispose()


def test_run_params_are_checked_with_the_param_named():
    p = RunParams.from_params(
        {
            "date_from": "2026-11-20",
            "date_to": "2026-11-22",
            "rerun_states": ["invalid_output"],
            "prompt_version": "v2",
            "record_limit": 10,
            "dry_run": True,
        }
    )
    assert p.days("2026-11-25") == [date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)]
    assert p.rerun_states == (State.INVALID_OUTPUT,) and p.record_limit == 10 and p.dry_run
    assert RunParams.from_params({}).days("2026-11-25") == [date(2026, 11, 25)]
    assert RunParams.from_params({"date_from": "2026-11-20"}).days("2026-11-25") == [date(2026, 11, 20)]
    with pytest.raises(StageError) as err:
        RunParams.from_params(
            {"date_from": "2026-11-22", "date_to": "2026-11-20", "rerun_states": ["queued"], "record_limit": 0}
        )
    message = str(err.value)
    assert "date_from 2026-11-22 is after date_to 2026-11-20" in message
    assert "rerun_states ['queued']" in message and "record_limit 0" in message


def test_a_version_override_loads_the_file_beside_the_configured_one():
    with pytest.raises(ValueError, match="prompts/ticket_summary/v9.yaml does not exist"):
        W.with_versions(prompt="v9")
    assert W.with_versions(prompt="v1", schema="v1") is W
