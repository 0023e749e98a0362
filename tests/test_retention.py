"""The retention policy end to end: a night run by ``airflow dags test`` keeps its files at the
provider (``delete_files_after_collect: false``); the ``batch_ai_retention`` DAG, after a dry run
that deletes nothing, deletes them (really gone at the provider: OpenAI's Files API, the S3 and
GCS buckets, asked with the official SDKs), prunes the payloads and audit rows of published
records to their hashes, and leaves every record waiting for a person as it was."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from batch_ai.ledger import tables as t
from sample_data.tickets import write_day
from test_e2e_ticket_summaries import DAY, Run

pytestmark = pytest.mark.e2e

POLICY = {"provider_files_days": 0, "payload_days": 0, "audit_days": 0}


def provider_files(emulator, provider: str) -> list[str]:
    """What the provider holds for the workload's jobs, as its own SDK lists it."""
    s = emulator.settings[provider]
    if provider == "openai":
        import openai

        return [f.id for f in openai.OpenAI(base_url=s["base_url"], api_key="emulator-key").files.list()]
    bucket, prefix = s["staging_uri"].split("://", 1)[1].split("/", 1)
    if provider == "bedrock":
        import boto3

        kw = {"region_name": s["region"], "aws_access_key_id": "x", "aws_secret_access_key": "x"}
        pages = boto3.client("s3", endpoint_url=s["s3_endpoint_url"], **kw).get_paginator("list_objects_v2")
        return [o["Key"] for page in pages.paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])]
    from google.cloud import storage  # finds the emulator through STORAGE_EMULATOR_HOST

    return [b.name for b in storage.Client(project=s["project"]).bucket(bucket).list_blobs(prefix=prefix)]


def latest_report(home) -> list[dict]:
    return json.loads(sorted((home / "reports" / "retention").glob("*.json"))[-1].read_text())


@pytest.mark.parametrize("provider", ["openai", "bedrock", "vertex"])
def test_retention_deletes_what_the_policy_no_longer_keeps_and_nothing_undecided(
    provider, airflow_home, tmp_path, emulator, monkeypatch
):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.settings["vertex"]["storage_emulator_host"])
    data = tmp_path / "data"
    write_day(data, DAY, count=120)
    run = Run(airflow_home, f"sqlite:///{tmp_path / 'ledger.sqlite'}", data, emulator, provider=provider)
    run.with_spec(
        tmp_path / "spec",
        **{"provider.delete_files_after_collect": False, "retention": POLICY, "quality_gate.max_invalid_rate": 1.0},
    )
    emulator.set_faults({provider: {"seed": 3, "realtime_faults": False, "refusal_rate": 0.1}})  # some to review
    run.dag()
    r, a = t.records.c, t.audit.c
    waiting = {
        x.id: (x.input, x.output) for x in run.rows(select(r.id, r.input, r.output).where(r.state == "review_required"))
    }
    published = {x.id for x in run.rows(select(r.id).where(r.state == "published"))}
    assert waiting and published
    audit_waiting = run.scalar(select(func.count()).where(a.record_id.in_(waiting)))
    kept = provider_files(emulator, provider)
    assert kept, "the night's files are at the provider"

    retention = Run(airflow_home, run.ledger_url, data, emulator, provider=provider, workload="batch_ai_retention")
    retention.env = run.env
    if provider == "openai":  # a dry run deletes nothing and says what it would
        retention.dag(DAY, conf={"dry_run": True})
        would = next(x for x in latest_report(airflow_home) if x["workload"] == "ticket_summaries")
        assert would["dry_run"] and would["provider_files"]["files"] == len(kept)
        assert would["payloads"]["records"] == len(published) + len(dead_letters(run))
        assert provider_files(emulator, provider) == kept
        assert run.scalar(select(func.count()).where(r.input["_pruned"].as_string().is_not(None))) == 0
    retention.dag(DAY)

    assert provider_files(emulator, provider) == [], "gone at the provider"
    ours = next(x for x in latest_report(airflow_home) if x["workload"] == "ticket_summaries")
    assert ours["provider_files"]["files"] == len(kept) and not ours["dry_run"]
    assert ours["payloads"]["records"] == len(published) + len(dead_letters(run))
    assert ours["provider_files"]["bytes"] > 0 and ours["bytes_freed"] > ours["provider_files"]["bytes"]
    # published records keep ids, states, costs and their hashes; their payloads are gone
    pruned = run.rows(select(r.id, r.input, r.output, r.content_hash, r.cost_usd).where(r.id.in_(published)))
    for x in pruned:
        assert x.input == {"_pruned": x.input["_pruned"], "content_hash": x.content_hash}
        assert set(x.output) == {"_pruned", "sha256"} and x.cost_usd > 0
    assert run.scalar(select(func.count()).where(a.record_id.in_(published))) == 0
    # what waits for a person is untouched
    now = {x.id: (x.input, x.output) for x in run.rows(select(r.id, r.input, r.output).where(r.id.in_(waiting)))}
    assert now == waiting
    assert run.scalar(select(func.count()).where(a.record_id.in_(waiting))) == audit_waiting


def dead_letters(run) -> list[int]:
    return [x.id for x in run.rows(select(t.records.c.id).where(t.records.c.state == "dead_letter"))]
