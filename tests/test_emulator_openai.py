"""The emulator, driven by the unmodified openai SDK: what the SDK sees must match the real API."""

from __future__ import annotations

import io
import json
import time

import jsonschema
import openai
import pytest

from batch_ai.workloads import load_workload

SCHEMA = load_workload("ticket_summaries").output_schema


def line(
    custom_id: str, ticket: str = "T-1", body: str = "I was charged twice on my invoice. Please refund me."
) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Summarise."},
                {"role": "user", "content": f"Ticket ID: {ticket}\n<input>\nSubject: Refund\n{body}\n</input>"},
            ],
            "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA, "strict": True}},
        },
    }


def upload(client, lines) -> str:
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    return client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id


def wait(client, batch_id, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        b = client.batches.retrieve(batch_id)
        if b.status in ("completed", "failed", "expired", "cancelled"):
            return b
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} did not end")


def results(client, file_id):
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


@pytest.fixture
def client(emulator):
    return openai.OpenAI(api_key="test-key", base_url=emulator.settings["openai"]["base_url"], max_retries=2)


def test_files_round_trip(client):
    fid = upload(client, [line("a")])
    f = client.files.retrieve(fid)
    assert f.purpose == "batch" and f.bytes > 0 and f.filename == "in.jsonl" and f.status == "processed"
    assert fid in [x.id for x in client.files.list()]
    assert json.loads(client.files.content(fid).text)["custom_id"] == "a"
    assert client.files.delete(fid).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(fid)


def test_batch_life_cycle_and_outputs(client):
    lines = [line(f"r{i}", ticket=f"T-{i}") for i in range(5)]
    batch = client.batches.create(
        input_file_id=upload(client, lines),
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"k": "v"},
    )
    assert batch.status == "validating" and batch.metadata == {"k": "v"} and batch.created_at <= time.time()
    seen = {batch.status}
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.1)
        batch = client.batches.retrieve(batch.id)
        seen.add(batch.status)
    assert batch.status == "completed" and {"validating", "completed"} <= seen
    assert batch.request_counts.total == 5 and batch.request_counts.completed == 5 and batch.request_counts.failed == 0
    assert batch.completed_at >= batch.in_progress_at >= batch.created_at
    assert batch.usage.input_tokens > 0 and batch.usage.output_tokens > 0 and batch.error_file_id is None
    out = results(client, batch.output_file_id)
    assert sorted(x["custom_id"] for x in out) == [f"r{i}" for i in range(5)]
    for x in out:
        assert x["response"]["status_code"] == 200
        answer = json.loads(x["response"]["body"]["choices"][0]["message"]["content"])
        jsonschema.validate(answer, SCHEMA)
        assert answer["ticket_id"] == f"T-{x['custom_id'][1:]}"  # derived from the input, not made up
        assert answer["category"] == "billing" and "charged twice" in answer["summary"]


def test_outputs_are_deterministic_per_custom_id(client):
    first = client.chat.completions.create(**line("x")["body"]).choices[0].message.content
    again = client.chat.completions.create(**line("x")["body"]).choices[0].message.content
    assert first == again


def test_list_paginates_newest_first(client):
    fid = upload(client, [line("a")])
    ids = [
        client.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="24h").id
        for _ in range(5)
    ]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # the SDK follows the cursor


def test_cancel_keeps_partial_results(client, emulator):
    emulator.set_faults({"openai": {"time_scale": 5}})
    batch = client.batches.create(
        input_file_id=upload(client, [line(f"r{i}") for i in range(10)]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    time.sleep(2.5)  # part-way through in_progress
    assert client.batches.cancel(batch.id).status == "cancelling"
    ended = wait(client, batch.id, timeout=30)
    assert ended.status == "cancelled" and ended.cancelled_at
    done = results(client, ended.output_file_id) if ended.output_file_id else []
    unfinished = results(client, ended.error_file_id)
    assert 0 < len(done) < 10 and len(done) + len(unfinished) == 10
    assert {x["error"]["code"] for x in unfinished} == {"batch_cancelled"}
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_expiry_returns_finished_lines(client, emulator):
    emulator.set_faults({"openai": {"job_outcome": "expired", "expire_done_fraction": 0.4}})
    batch = client.batches.create(
        input_file_id=upload(client, [line(f"r{i}") for i in range(10)]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    ended = wait(client, batch.id)
    assert ended.status == "expired" and ended.expired_at
    assert len(results(client, ended.output_file_id)) == 4
    assert {x["error"]["code"] for x in results(client, ended.error_file_id)} == {"batch_expired"}


def test_bad_input_file_fails_validation(client):
    bad = [line("same"), line("same"), {**line("x"), "url": "/v1/embeddings"}]
    batch = client.batches.create(
        input_file_id=upload(client, bad), endpoint="/v1/chat/completions", completion_window="24h"
    )
    ended = wait(client, batch.id)
    assert ended.status == "failed" and ended.failed_at
    codes = {e.code for e in ended.errors.data}
    assert {"duplicate_custom_id", "mismatched_endpoint"} <= codes and ended.output_file_id is None


def test_per_line_faults_and_shuffle(client, emulator):
    emulator.set_faults(
        {"openai": {"seed": 3, "shuffle": True, "line_error_rate": 0.2, "malformed": {"html": 0.2, "non_json": 0.2}}}
    )
    ids = [f"r{i:02d}" for i in range(40)]
    batch = client.batches.create(
        input_file_id=upload(client, [line(i) for i in ids]), endpoint="/v1/chat/completions", completion_window="24h"
    )
    ended = wait(client, batch.id)
    out, err = results(client, ended.output_file_id), results(client, ended.error_file_id)
    log = emulator.fault_log()["openai"]
    assert {x["custom_id"] for x in err} == {k for k, v in log.items() if v == "line_error"}
    assert all(x["response"]["status_code"] == 500 for x in err)
    assert ended.request_counts.failed == len(err) and ended.request_counts.completed == len(out)
    assert [x["custom_id"] for x in out] != sorted(x["custom_id"] for x in out)  # shuffled
    for x in out:
        content = x["response"]["body"]["choices"][0]["message"]["content"]
        if log.get(x["custom_id"]) == "non_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(content)
        elif log.get(x["custom_id"]) == "html":
            assert "<script>" in content
        else:
            jsonschema.validate(json.loads(content), SCHEMA)


def test_refusal(client, emulator):
    emulator.set_faults({"openai": {"refusal_rate": 1.0}})
    message = client.chat.completions.create(**line("x")["body"]).choices[0].message
    assert message.content is None and message.refusal


def test_sdk_retries_429_and_5xx(client, emulator):
    emulator.set_faults(
        {
            "openai": {
                "http_errors": [
                    {"status": 429, "count": 1, "path": "^/v1/files$"},
                    {"status": 503, "count": 1, "path": "^/v1/files$"},
                ]
            }
        }
    )
    upload(client, [line("a")])  # two failures, then success on the SDK's own third try
    assert emulator.calls()["POST /openai/v1/files"] == 3


def test_should_retry_false_stops_the_sdk(client, emulator):
    emulator.set_faults(
        {
            "openai": {
                "http_errors": [
                    {"status": 429, "count": 5, "method": "POST", "path": "^/v1/files$", "should_retry": False}
                ]
            }
        }
    )
    with pytest.raises(openai.RateLimitError):
        upload(client, [line("a")])
    assert emulator.calls()["POST /openai/v1/files"] == 1


def test_missing_api_key_is_401(emulator):
    import httpx

    r = httpx.get(f"{emulator.settings['openai']['base_url']}/batches")
    assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
