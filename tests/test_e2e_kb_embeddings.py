"""The embeddings workload end to end: ``airflow dags test kb_embeddings`` against the emulator
(the openai SDK → ``/v1/embeddings`` in a batch), two nights in a row; the same night on Vertex AI
(text-embedding-005 batch prediction) and Bedrock (Titan Text Embeddings V2 batch inference);
and a generation workload on ``/v1/responses``."""

from __future__ import annotations

import json

import numpy as np
import openai
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from batch_ai.ledger import tables as t
from provider_emulator.model import embedding
from sample_data import kb_articles
from sample_data.tickets import write_day
from test_e2e_workloads import make_run, publishes_per_record

pytestmark = pytest.mark.e2e

DAY1, DAY2 = "2026-11-25", "2026-11-26"


def parquet_rows(run) -> list[dict]:
    files = sorted((run.data_dir / "kb" / "embeddings").glob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def submissions(run, source_id: str) -> int:
    a, r = t.audit.c, t.records.c
    query = (
        select(func.count())
        .select_from(t.audit.join(t.records, t.records.c.id == a.record_id))
        .where(r.source_id == source_id, a.to_state == "submitted")
    )
    return run.scalar(query)


def batch_sizes(run) -> list[int]:
    client = openai.OpenAI(api_key="x", base_url=run.emulator.settings["openai"]["base_url"])
    return sorted(client.batches.retrieve(b).request_counts.total for b in run.emulator.created("openai"))


def test_two_nights_embed_each_article_once_per_content(airflow_home, tmp_path, emulator):
    kb_articles.write_day(tmp_path / "data", DAY1)
    run = make_run(airflow_home, tmp_path, emulator, "kb_embeddings")
    run.dag(DAY1)
    first = run.report()
    assert first["extracted"] == 120 and first["lost"] == 0
    assert first["states"]["dead_letter"] == 3 and first["states"]["duplicate"] == 1
    assert first["states"]["published"] == 116 and first["cost"]["batch_usd"] > 0
    table = pq.read_table(next((run.data_dir / "kb" / "embeddings").glob("*.parquet")))
    assert str(table.schema.field("vector").type) == "list<element: float>"
    assert table.column_names[:4] == ["id", "model", "dimensions", "vector"]
    assert {"source_date", "record_id", "prompt_version", "schema_version", "run_id"} <= set(table.column_names)
    rows = table.to_pylist()
    assert len(rows) == len({r["id"] for r in rows}) == 116
    # each row names the request that answered it (the OpenAI line's request id)
    assert all(r["provider_request_id"].startswith("req_") for r in rows)
    assert len({r["provider_request_id"] for r in rows}) == 116
    assert {(r["model"], r["dimensions"], len(r["vector"])) for r in rows} == {("text-embedding-3-small", 1536, 1536)}
    # the vector is the one the provider returned for the rendered article, as float32
    source = {a["article_id"]: a for a in (kb_articles.article(DAY1, n) for n in range(101))}
    some = next(r for r in rows if r["id"] in source)
    art = source[some["id"]]
    expected = np.asarray(embedding(f"{art['title']}\n\n{art['body']}", 1536), dtype=np.float32)
    assert np.array_equal(np.asarray(some["vector"], dtype=np.float32), expected)

    # the same night again: nothing submitted, no new file, no row twice
    jobs = len(emulator.created("openai"))
    run.dag(DAY1)
    assert len(emulator.created("openai")) == jobs and run.report()["provider_job_ids"] == []
    assert len(parquet_rows(run)) == 116

    # the next night: yesterday's unchanged articles are not sent again; the changed ones are
    kb_articles.write_day(tmp_path / "data", DAY2)
    run.dag(DAY2)
    second = run.report()
    assert second["lost"] == 0 and second["extracted"] == 120
    lines = [json.loads(x) for x in kb_articles.generate(DAY2) if x.endswith("}")]
    before = [x for x in lines if x.get("article_id", "").startswith(kb_articles.article_id(DAY1, 0)[:6])]
    unchanged = [x for x in before if "Updated on" not in x["body"]]
    changed = [x for x in before if "Updated on" in x["body"]]
    assert len(unchanged) == 10 and len(changed) == 5
    assert all(submissions(run, x["article_id"]) == 1 for x in unchanged)  # embedded (and paid) once
    assert all(submissions(run, x["article_id"]) == 2 for x in changed)
    assert batch_sizes(run) == [101 + 5, 116]  # day 2's job: its new articles and the changed ones
    every = parquet_rows(run)
    assert len(every) == 116 + 106
    latest = {}
    for r in sorted(every, key=lambda r: (r["source_date"], r["published_at"])):
        latest[r["id"]] = r
    for x in changed:  # readers take the latest row per id: the new content's vector
        text = f"{x['title']}\n\n{x['body']}"
        assert np.array_equal(
            np.asarray(latest[x["article_id"]]["vector"], dtype=np.float32),
            np.asarray(embedding(text, 1536), dtype=np.float32),
        )
    assert publishes_per_record(run) <= {1, 2}


@pytest.mark.parametrize(
    "provider, model, dimensions",
    [("vertex", "text-embedding-005", 768), ("bedrock", "amazon.titan-embed-text-v2:0", 1024)],
)
def test_kb_embeddings_on_vertex_and_bedrock(airflow_home, tmp_path, emulator, provider, model, dimensions):
    kb_articles.write_day(tmp_path / "data", DAY1)
    run = make_run(airflow_home, tmp_path, emulator, "kb_embeddings")
    run.env["BATCH_AI_PROVIDER"] = provider  # as make demo PROVIDER=... does: its default embedding model
    run.dag(DAY1)
    report = run.report()
    assert report["provider"] == provider and report["lost"] == 0 and report["extracted"] == 120
    assert report["states"]["published"] == 116 and report["states"]["invalid_output"] == 0
    assert report["cost"]["batch_usd"] > 0
    assert len(emulator.created(provider)) == 1  # one job of 116 records (Bedrock's minimum is 100)
    rows = parquet_rows(run)
    assert len(rows) == len({r["id"] for r in rows}) == 116
    assert {(r["model"], r["dimensions"], len(r["vector"])) for r in rows} == {(model, dimensions, dimensions)}
    # every vector is the one the provider returned for the rendered article, as float32
    source = {a["article_id"]: a for a in (kb_articles.article(DAY1, n) for n in range(101))}
    checked = [r for r in rows if r["id"] in source]
    assert len(checked) >= 100
    for r in checked:
        art = source[r["id"]]
        expected = np.asarray(embedding(f"{art['title']}\n\n{art['body']}", dimensions), dtype=np.float32)
        assert np.array_equal(np.asarray(r["vector"], dtype=np.float32), expected), r["id"]


def test_broken_vectors_are_invalid_and_failed_lines_are_retried(airflow_home, tmp_path, emulator):
    kb_articles.write_day(tmp_path / "data", DAY1)
    run = make_run(airflow_home, tmp_path, emulator, "kb_embeddings", **{"quality_gate.max_invalid_rate": 1.0})
    emulator.set_faults(
        {
            "openai": {
                "seed": 3,
                "realtime_faults": False,
                "line_error_rate": 0.1,
                "malformed": {"non_json": 0.04, "bad_enum": 0.04, "missing_field": 0.04, "overlong": 0.04},
            }
        }
    )
    run.dag(DAY1)
    report = run.report()
    assert report["lost"] == 0 and report["states"]["provider_error"] == 0
    r = t.records.c
    invalid = run.rows(select(r.source_id, r.error_message, r.output).where(r.state == "invalid_output"))
    messages = " | ".join(x.error_message for x in invalid)
    assert "not a finite number" in messages and "vector: empty" in messages
    assert "1537 dimensions, not the configured 1536" in messages
    assert report["states"]["invalid_output"] == len(invalid) > 0
    assert report["states"]["published"] == 116 - len(invalid)  # the failed lines were resubmitted
    published = parquet_rows(run)
    assert len(published) == report["states"]["published"]
    assert all(len(x["vector"]) == 1536 and np.isfinite(x["vector"]).all() for x in published)
    assert not {x.source_id for x in invalid} & {x["id"] for x in published}


def test_a_generation_workload_on_the_responses_endpoint(airflow_home, tmp_path, emulator):
    write_day(tmp_path / "data", DAY1, count=60)
    run = make_run(airflow_home, tmp_path, emulator, "ticket_summaries", **{"provider.endpoint": "responses"})
    run.dag(DAY1)
    report = run.report()
    states = report["states"]
    assert report["lost"] == 0 and states["published"] > 0 and states["invalid_output"] == 0
    # every valid record published, but those the workload's review rule holds for a person
    done = states["published"] + states["review_required"]
    assert done == report["extracted"] - states["dead_letter"] - states["duplicate"]
    client = openai.OpenAI(api_key="x", base_url=emulator.settings["openai"]["base_url"])
    assert {client.batches.retrieve(b).endpoint for b in emulator.created("openai")} == {"/v1/responses"}
    assert report["cost"]["batch_usd"] > 0
    summaries = run.rows(select(t.records.c.output).where(t.records.c.state == "published"))
    assert all(s.output["summary"] and s.output["category"] for s in summaries)
