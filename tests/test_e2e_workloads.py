"""The other nightly workloads end to end through ``airflow dags test`` against the emulator,
and what cost and deadlines do to a run: a budget that stops it before any submission, and a
missed deadline answered through real-time calls."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select, text

from batch_ai.ledger import tables as t
from batch_ai.localenv import dags_test
from sample_data import compliance, documents, eval_set, leads
from sample_data.tickets import write_day
from test_e2e_ticket_summaries import DAY, Run

pytestmark = pytest.mark.e2e


def make_run(airflow_home, tmp_path, emulator, workload, **changes):
    run = Run(
        airflow_home,
        f"sqlite:///{tmp_path / 'ledger.sqlite'}",
        tmp_path / "data",
        emulator,
        provider=None,
        workload=workload,
    )
    run.base_changes = {}
    run.with_spec(tmp_path / "spec", **changes)
    return run


def records(run):
    r = t.records.c
    return run.rows(
        select(r.source_id, r.state, r.output, r.input, r.error_message, r.cost_usd).where(r.state != "dead_letter")
    )


def publishes_per_record(run) -> set[int]:
    a = t.audit.c
    return set(
        dict(
            run.rows(select(a.record_id, func.count()).where(a.to_state == "published").group_by(a.record_id))
        ).values()
    )


def test_document_tagging(airflow_home, tmp_path, emulator):
    documents.write_day(tmp_path / "data", DAY)
    run = make_run(airflow_home, tmp_path, emulator, "document_tagging")
    run.dag()
    report = run.report()
    assert report["provider"] == "anthropic" and report["lost"] == 0 and report["extracted"] == 200
    # the huge document and the empty one are dead letters that say why
    reasons = [
        r.error_message for r in run.rows(select(t.records.c.error_message).where(t.records.c.state == "dead_letter"))
    ]
    assert any("over the limit of 50000" in r for r in reasons) and any(
        "'text' is missing or empty" in r for r in reasons
    )
    rows = records(run)
    for r in rows:
        if r.state in ("published", "review_required") and r.output:
            assert 1 <= len(r.output["tags"]) <= 5 and len(set(r.output["tags"])) == len(r.output["tags"])
        if r.state == "published":  # low confidence never reaches the table unseen
            assert r.output["confidence"] >= 0.15 and r.cost_usd > 0
    unsure = [r for r in rows if r.state == "review_required" and r.output and r.output["confidence"] < 0.15]
    assert unsure and all("unsure of its tags" in r.error_message for r in unsure)
    table = run.rows(text("select doc_id, tags, publish_status from document_tags"))
    assert sum(1 for x in table if x.publish_status == "published") == report["states"]["published"]


def test_lead_scoring_shows_no_score_before_its_review(airflow_home, tmp_path, emulator):
    leads.write_day(tmp_path / "data", DAY)
    run = make_run(airflow_home, tmp_path, emulator, "lead_scoring")
    run.dag()
    report = run.report()
    assert report["model"] == "gpt-4.1-mini" and report["lost"] == 0
    rows = records(run)
    hot = [r for r in rows if r.output and r.output.get("score", 0) > 79]
    assert hot and all(r.state == "review_required" for r in hot)
    sink = {x.lead_id: x for x in run.rows(text("select lead_id, score, publish_status from lead_scores"))}
    for r in hot:  # the CRM shows pending, not the score, until sales operations decided
        assert sink[r.source_id].publish_status == "pending" and sink[r.source_id].score is None
    assert {x.publish_status for x in sink.values()} == {"pending", "published"}


def test_compliance_review_sends_everything_flagged_to_a_person(airflow_home, tmp_path, emulator):
    compliance.write_day(tmp_path / "data", DAY)
    run = make_run(airflow_home, tmp_path, emulator, "compliance_review", **{"review.sample_rate": 0.0})
    run.dag()
    report = run.report()
    assert report["lost"] == 0
    rows = records(run)
    flagged = [r for r in rows if r.output and r.output.get("flagged")]
    assert flagged and all(r.state == "review_required" for r in flagged)
    assert all(not r.output["flagged"] for r in rows if r.state == "published")
    # every redaction points inside its text and quotes it exactly
    spans = [(r, s) for r in rows if r.output for s in r.output.get("redactions", [])]
    assert spans
    for r, s in spans:
        assert r.input["text"][s["start"] : s["end"]] == s["text"]
    assert any(v["policy"] == "credential_sharing" for r in flagged for v in r.output["violations"])


def test_model_evaluation_scores_match_the_labels(airflow_home, tmp_path, emulator):
    path = eval_set.write_prompt_set(tmp_path / "data")
    rates = {"gpt-4o-mini": 0.05, "gpt-4.1-nano": 0.2, "claude-haiku-4-5": 0.0, "gemini-2.0-flash-001": 0.1}
    emulator.set_faults(
        {
            p: {"model_error_rates": rates, "seed": 1, "malformed": {"bad_enum": 0.03}}
            for p in ("openai", "anthropic", "vertex")
        }
    )
    run = make_run(airflow_home, tmp_path, emulator, "model_evaluation")
    output = run.dag()
    report = run.report()
    # the table in the evaluate task's log shows each pair's window, Vertex's without an SLA
    assert "turnaround      window" in output
    rows = [line for line in output.splitlines() if "vertex:gemini-2.0-flash-001 " in line and " 120 " in line]
    assert rows and all("s  72h no SLA" in line for line in rows)
    labels = {json.loads(line)["item_id"]: json.loads(line)["label"] for line in path.read_text().splitlines()}
    r = t.records.c
    by_target = {x["target"]: x for x in report["targets"]}
    assert set(by_target) == {
        "openai:gpt-4o-mini",
        "openai:gpt-4.1-nano",
        "anthropic:claude-haiku-4-5",
        "vertex:gemini-2.0-flash-001",
    }
    for key, scored in by_target.items():
        model = key.split(":", 1)[1]
        answers = run.rows(select(r.source_id, r.state, r.output).where(r.model == model))
        assert len(answers) == len(labels) == scored["items"] == 120
        # scored here from the ledger's answers and the set's own labels
        correct = sum(1 for a in answers if a.state == "published" and a.output["label"] == labels[a.source_id])
        assert scored["correct"] == correct and scored["accuracy"] == round(correct / 120, 4)
        assert scored["cost_per_1k_usd"] > 0 and scored["turnaround_seconds"] is not None
        # each pair's provider completion window, from the capability table
        assert scored["window_hours"] == {"vertex": 72}.get(scored["provider"], 24)
    # the weaker stand-in scores lower
    assert by_target["anthropic:claude-haiku-4-5"]["accuracy"] > by_target["openai:gpt-4.1-nano"]["accuracy"]
    chart = tmp_path / "airflow" / "reports" / "model_evaluation"
    assert [p.suffix for p in sorted(chart.iterdir())] == [".json", ".png"]
    assert sorted(chart.iterdir())[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each target published its own answers file
    assert len(list((tmp_path / "data" / "eval" / "answers").glob("*.jsonl"))) == 4


def test_a_run_over_its_budget_stops_before_any_submission(airflow_home, tmp_path, emulator):
    write_day(tmp_path / "data", DAY, count=120)
    run = make_run(airflow_home, tmp_path, emulator, "ticket_summaries", **{"budget.max_batch_usd": 0.0001})
    log = tmp_path / "budget.log"
    proc = dags_test(run.env, "ticket_summaries", DAY, log)
    output = log.read_text()
    assert proc.returncode != 0 and "is over the budget of $0.0001" in output and "nothing was submitted" in output
    assert emulator.jobs("openai") == []
    assert run.scalar(select(func.count()).select_from(t.jobs)) == 0
    assert set(run.rows(select(t.records.c.state).distinct())) <= {("queued",), ("dead_letter",)}


def test_a_missed_deadline_answers_in_real_time_and_publishes_each_record_once(airflow_home, tmp_path, emulator):
    write_day(tmp_path / "data", DAY, count=120)
    run = make_run(
        airflow_home,
        tmp_path,
        emulator,
        "ticket_summaries",
        **{
            "review.sample_rate": 0.0,
            "review.rules": [],
            "retry.rounds": 0,
            # due about ten seconds after the run starts; the emulator's jobs take minutes here
            "deadline": {"hours": 0.003, "on_miss": "realtime", "realtime_per_minute": 6000},
        },
    )
    emulator.set_faults({"openai": {"time_scale": 100}})
    run.dag()
    report = run.report()
    assert report["sla_risk"] is None  # a miss is answered in real time
    deadline = report["deadline"]
    assert deadline["records"] == 100 and len(deadline["cancelled"]) == 1
    assert report["states"]["published"] == 100 and report["lost"] == 0
    assert report["cost"]["realtime_paid_usd"] == pytest.approx(report["cost"]["batch_usd"], rel=1e-6)
    assert publishes_per_record(run) == {1}
    assert emulator.jobs("openai") and run.scalar(text("select status from batch_ai_jobs")) == "cancelled"
    assert run.scalar(text("select count(*) from ticket_summaries where publish_status = 'published'")) == 100
    # each real-time answer is kept with the id the API named its request with (x-request-id)
    ids = [r[0] for r in run.rows(text("select provider_request_id from ticket_summaries"))]
    assert len(ids) == 100 and all(i and i.startswith("req_") for i in ids) and len(set(ids)) == 100


def assert_sla_risk_is_reported(report, output: str) -> None:
    """ticket_summaries is due 6 h after it starts, with on_miss: alert; on Vertex AI a batch may
    queue for 72 h and is not covered by the SLA: the run report, its log and the night's report say so."""
    from batch_ai.report import format_combined

    risk = report["sla_risk"]
    assert risk.startswith(
        "SLA risk: the deadline of ticket_summaries (6h) is shorter than vertex's batch completion window of 72h "
        "(queueing up to 72h; not covered by the SLA), and deadline.on_miss is 'alert'"
    )
    assert f"  {risk}" in output  # the report task's log
    assert risk in format_combined({"ticket_summaries": report}).splitlines()  # the night's report


def _gcs_sizes(emulator, monkeypatch, uri: str) -> int:
    """The bytes of the objects under a gs:// URI in the emulator's Cloud Storage."""
    from google.cloud import storage

    s = emulator.settings["vertex"]
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", s["storage_emulator_host"])
    bucket, _, prefix = uri.removeprefix("gs://").partition("/")
    blobs = storage.Client(project=s["project"]).list_blobs(bucket, prefix=prefix)
    return sum(b.size for b in blobs if b.name.endswith(".jsonl"))


def test_the_true_cost_of_two_nights_and_their_trend(airflow_home, tmp_path, emulator, monkeypatch):
    """Review labour and storage priced per run (on Vertex, whose staging in Cloud Storage has a
    price), and ``python -m batch_ai costs`` over the two nights: the table and the chart. The
    first night's reports also carry the SLA risk of a 6 h deadline on Vertex's 72 h window."""
    import subprocess
    import sys

    from batch_ai.localenv import REPO
    from batch_ai.providers.capabilities import capabilities

    data = tmp_path / "data"
    write_day(data, DAY, count=120)
    write_day(data, "2026-11-26", count=120, first_id=200000)  # the next night's tickets
    run = Run(airflow_home, f"sqlite:///{tmp_path / 'ledger.sqlite'}", data, emulator, provider="vertex")
    changes = {
        "review.sample_rate": 0.1,
        "provider.delete_files_after_collect": False,  # kept: priced for retention.provider_files_days
        "retention.provider_files_days": 30,
        "cost": {"review_minutes": 2, "reviewer_hourly_usd": 60},
    }
    run.with_spec(tmp_path / "spec", **changes)
    output = run.dag(DAY)
    assert_sla_risk_is_reported(run.report(), output)
    cost = run.report()["cost"]
    # review labour: every record the run sent to a person, 2 minutes each at $60/h
    a = t.audit.c
    reviewed = run.scalar(select(func.count(a.record_id.distinct())).where(a.to_state == "review_required"))
    assert reviewed > 0 and cost["review_records"] == reviewed
    assert cost["review_usd"] == pytest.approx(reviewed * 2 / 60 * 60)
    # storage: the bytes of the request files staged and the result files kept, as Cloud Storage has them
    jobs = run.rows(select(t.jobs.c.details))
    assert cost["staged_bytes"] == sum(_gcs_sizes(emulator, monkeypatch, j.details["input_uri"]) for j in jobs) > 0
    assert cost["result_bytes"] == sum(_gcs_sizes(emulator, monkeypatch, j.details["output_dir"]) for j in jobs) > 0
    price = capabilities().provider("vertex").storage.usd_per_gb_month
    gb = (cost["staged_bytes"] + cost["result_bytes"]) / 1e9
    assert cost["storage_usd"] == pytest.approx(gb * price, abs=1e-6) and cost["storage_usd_per_gb_month"] == price
    true_cost = cost["batch_usd"] + cost["review_usd"] + cost["storage_usd"]
    assert cost["true_cost_usd"] == pytest.approx(true_cost, abs=1e-6)
    # against an all-real-time night: real-time prices and the same review labour, nothing staged
    realtime_night = cost["realtime_equivalent_usd"] + cost["review_usd"]
    assert cost["net_saving_usd"] == pytest.approx(realtime_night - true_cost, abs=1e-6)
    assert cost["net_saving_usd"] == pytest.approx(cost["savings_usd"] - cost["storage_usd"], abs=1e-6)
    first = run.report()
    run.dag("2026-11-26")
    second = run.report()
    assert second["night"] == "2026-11-26" and first["night"] == DAY

    out = tmp_path / "costs"
    proc = subprocess.run(
        [sys.executable, "-m", "batch_ai", "costs", "--days", "30", "--out", str(out), "--ledger-url", run.ledger_url],
        env={**run.env, "PYTHONPATH": f"{REPO / 'plugins'}:{REPO / 'include'}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "batch-ai costs: 2026-10-28 .. 2026-11-26 (30 nights up to the latest in the ledger)"
    nights = {line.split()[0]: line.split() for line in lines if line.startswith("2026-")}
    assert set(nights) == {DAY, "2026-11-26"}
    for report in (first, second):
        row, c = nights[report["night"]], report["cost"]
        assert row[1:3] == ["ticket_summaries", "1"] and float(row[3]) == round(c["batch_usd"], 4)
        assert float(row[7]) == round(c["review_usd"], 4) and float(row[9]) == round(c["net_saving_usd"], 4)
        invalid = report["states"]["invalid_output"]
        answered = sum(report["states"][s] for s in ("published", "review_required", "invalid_output"))
        assert row[10] == f"{invalid / answered:.1%}"
    total = next(line for line in lines if line.startswith("total"))
    both = round(first["cost"]["net_saving_usd"] + second["cost"]["net_saving_usd"], 4)
    assert float(total.split()[9]) == pytest.approx(both, abs=1e-4)
    chart = out / "costs_2026-10-28_2026-11-26.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"chart: {chart}" in proc.stdout
