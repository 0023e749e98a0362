"""The emulator, driven by the unmodified google-genai SDK (vertexai=True) and google-cloud-storage."""

from __future__ import annotations

import json
import time

import jsonschema
import pytest
from google.genai import errors, types

from batch_ai.workloads import load_workload

SCHEMA = load_workload("ticket_summaries").output_schema
MODEL = "gemini-2.0-flash-001"
BUCKET = "batch-in"


def request(i: int, body: str = "I was charged twice on my invoice. Please refund me.") -> dict:
    return {
        "contents": [
            {"role": "user", "parts": [{"text": f"Ticket ID: T-{i}\n<input>\nSubject: Refund\n{body}\n</input>"}]}
        ],
        "systemInstruction": {"parts": [{"text": "Summarise the ticket."}]},
        "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": SCHEMA},
        "labels": {"custom_id": f"r{i}"},
    }


def stage(gcs, name: str, lines: list[dict]) -> str:
    gcs.bucket(BUCKET).blob(name).upload_from_string("".join(json.dumps({"request": x}) + "\n" for x in lines))
    return f"gs://{BUCKET}/{name}"


def wait(client, name, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.batches.get(name=name)
        if job.state.name in (
            "JOB_STATE_SUCCEEDED",
            "JOB_STATE_PARTIALLY_SUCCEEDED",
            "JOB_STATE_FAILED",
            "JOB_STATE_CANCELLED",
            "JOB_STATE_EXPIRED",
        ):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {name} did not end")


def predictions(gcs, job) -> list[dict]:
    directory = job.output_info.gcs_output_directory if hasattr(job, "output_info") else None
    assert directory and "/prediction-model-" in directory
    blob_name = directory.removeprefix(f"gs://{BUCKET}/") + "/predictions.jsonl"
    return [json.loads(x) for x in gcs.bucket(BUCKET).blob(blob_name).download_as_text().splitlines()]


def test_batch_life_cycle(gcp):
    client, gcs = gcp
    src = stage(gcs, "in/jobs.jsonl", [request(i) for i in range(5)])
    job = client.batches.create(
        model=MODEL, src=src, config={"dest": f"gs://{BUCKET}/out", "display_name": "tickets-1"}
    )
    assert job.name.split("/")[-1].isdigit() and job.display_name == "tickets-1"
    assert job.state.name == "JOB_STATE_PENDING" and job.create_time.tzinfo and job.model.endswith(MODEL)
    ended = wait(client, job.name)
    assert ended.state.name == "JOB_STATE_SUCCEEDED", ended.error
    assert ended.end_time >= ended.start_time >= ended.create_time
    assert ended.completion_stats.successful_count == 5 and ended.completion_stats.failed_count == 0
    rows = predictions(gcs, ended)
    assert len(rows) == 5
    for row in rows:
        assert row["status"] == "" and row["request"]["labels"]["custom_id"].startswith("r")  # the request is echoed
        text = row["response"]["candidates"][0]["content"]["parts"][0]["text"]
        answer = json.loads(text)
        jsonschema.validate(answer, SCHEMA)
        assert answer["ticket_id"] == f"T-{row['request']['labels']['custom_id'][1:]}"
        assert row["response"]["usageMetadata"]["totalTokenCount"] > 0
    deleted = client.batches.delete(name=job.name)
    assert deleted.done
    with pytest.raises(errors.ClientError) as err:
        client.batches.get(name=job.name)
    assert err.value.code == 404


def test_list_paginates(gcp):
    client, gcs = gcp
    src = stage(gcs, "in/one.jsonl", [request(0)])
    names = [
        client.batches.create(model=MODEL, src=src, config={"dest": f"gs://{BUCKET}/out", "display_name": f"j{i}"}).name
        for i in range(5)
    ]
    listed = [j.name for j in client.batches.list(config={"page_size": 2})]
    assert listed == names[::-1]


def test_cancel(gcp, emulator):
    client, gcs = gcp
    emulator.set_faults({"vertex": {"time_scale": 5}})
    src = stage(gcs, "in/ten.jsonl", [request(i) for i in range(10)])
    job = client.batches.create(model=MODEL, src=src, config={"dest": f"gs://{BUCKET}/out"})
    time.sleep(2.5)
    client.batches.cancel(name=job.name)
    assert client.batches.get(name=job.name).state.name == "JOB_STATE_CANCELLING"
    ended = wait(client, job.name)
    assert ended.state.name == "JOB_STATE_CANCELLED"
    stats = ended.completion_stats
    assert 0 < stats.successful_count < 10 and stats.incomplete_count == 10 - stats.successful_count


@pytest.mark.parametrize(
    "outcome, state", [("expired", "JOB_STATE_EXPIRED"), ("failed_validation", "JOB_STATE_FAILED")]
)
def test_expired_and_failed_jobs(gcp, emulator, outcome, state):
    client, gcs = gcp
    emulator.set_faults({"vertex": {"job_outcome": outcome, "expire_done_fraction": 0.4}})
    job = client.batches.create(
        model=MODEL,
        src=stage(gcs, "in/x.jsonl", [request(i) for i in range(10)]),
        config={"dest": f"gs://{BUCKET}/out"},
    )
    ended = wait(client, job.name)
    assert ended.state.name == state
    if outcome == "expired":
        assert ended.completion_stats.successful_count == 4 and ended.completion_stats.incomplete_count == 6
        assert len(predictions(gcs, ended)) == 4
    else:
        assert ended.error.code and ended.error.message


def test_missing_input_fails_the_job(gcp):
    client, _ = gcp
    job = client.batches.create(model=MODEL, src=f"gs://{BUCKET}/nope.jsonl", config={"dest": f"gs://{BUCKET}/out"})
    ended = wait(client, job.name)
    assert ended.state.name == "JOB_STATE_FAILED" and "does not exist" in ended.error.message


def test_partial_success_line_errors_and_malformed(gcp, emulator):
    client, gcs = gcp
    emulator.set_faults(
        {
            "vertex": {
                "seed": 9,
                "shuffle": True,
                "line_error_rate": 0.2,
                "refusal_rate": 0.1,
                "malformed": {"html": 0.15, "missing_field": 0.15},
            }
        }
    )
    job = client.batches.create(
        model=MODEL,
        src=stage(gcs, "in/30.jsonl", [request(i) for i in range(30)]),
        config={"dest": f"gs://{BUCKET}/out"},
    )
    ended = wait(client, job.name)
    assert ended.state.name == "JOB_STATE_PARTIALLY_SUCCEEDED"
    rows = predictions(gcs, ended)
    log = emulator.fault_log()["vertex"]
    failed = {r["request"]["labels"]["custom_id"] for r in rows if r["status"]}
    assert failed == {k for k, v in log.items() if v == "line_error"} and ended.completion_stats.failed_count == len(
        failed
    )
    for r in rows:
        cid = r["request"]["labels"]["custom_id"]
        if log.get(cid) == "refusal":
            assert (
                r["response"]["candidates"][0]["finishReason"] == "SAFETY"
                and "content" not in r["response"]["candidates"][0]
            )
        elif log.get(cid) == "html":
            assert "<script>" in r["response"]["candidates"][0]["content"]["parts"][0]["text"]
        elif log.get(cid) == "missing_field":
            assert "ticket_id" not in json.loads(r["response"]["candidates"][0]["content"]["parts"][0]["text"])
    ids = [r["request"]["labels"]["custom_id"] for r in rows]
    assert ids != sorted(ids, key=lambda c: int(c[1:]))


def test_generate_content_with_response_schema(gcp):
    client, _ = gcp
    response = client.models.generate_content(
        model=MODEL,
        contents="Ticket ID: T-7\n<input>\nMy parcel never arrived and the tracking is wrong.\n</input>",
        config={
            "response_mime_type": "application/json",
            "response_schema": {
                "type": "OBJECT",
                "properties": {
                    "ticket_id": {"type": "STRING"},
                    "category": {"type": "STRING", "enum": ["billing", "shipping"]},
                },
                "required": ["ticket_id", "category"],
            },
            "system_instruction": "Classify.",
        },
    )
    assert response.parsed == {"ticket_id": "T-7", "category": "shipping"}
    assert response.usage_metadata.total_token_count > 0 and response.model_version == MODEL


def test_http_errors_are_not_retried_by_default_and_retried_when_asked(gcp, emulator):
    client, _ = gcp
    emulator.set_faults({"vertex": {"http_errors": [{"status": 429, "count": 1, "path": "generateContent"}]}})
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(model=MODEL, contents="hi")
    assert err.value.code == 429 and err.value.status == "RESOURCE_EXHAUSTED"
    emulator.set_faults({"vertex": {"http_errors": [{"status": 503, "count": 2, "path": "generateContent"}]}})
    retrying = types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=3, initial_delay=0.01, max_delay=0.05))
    client.models.generate_content(model=MODEL, contents="hi", config={"http_options": retrying})
    calls = emulator.calls()
    assert sum(n for k, n in calls.items() if k.endswith(":generateContent")) == 1 + 3
