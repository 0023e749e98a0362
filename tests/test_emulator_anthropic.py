"""The emulator, driven by the unmodified anthropic SDK, through the whole Message Batches life cycle."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import anthropic
import httpx
import jsonschema
import pytest

from batch_ai.workloads import load_workload

SCHEMA = load_workload("ticket_summaries").output_schema


def params(ticket="T-1", body="I was charged twice on my invoice. Please refund me.", style="output_config"):
    p = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 400,
        "system": "Summarise the ticket.",
        "messages": [{"role": "user", "content": f"Ticket ID: {ticket}\n<input>\nSubject: Refund\n{body}\n</input>"}],
    }
    if style == "output_config":
        p["output_config"] = {"format": {"type": "json_schema", "schema": SCHEMA}}
    elif style == "tool":
        p["tools"] = [{"name": "record_summary", "description": "Record the summary.", "input_schema": SCHEMA}]
        p["tool_choice"] = {"type": "tool", "name": "record_summary"}
    return p


def requests(n, **kw):
    return [{"custom_id": f"r{i}", "params": params(ticket=f"T-{i}", **kw)} for i in range(n)]


@pytest.fixture
def client(emulator):
    return anthropic.Anthropic(api_key="test-key", base_url=emulator.settings["anthropic"]["base_url"], max_retries=2)


def wait(client, batch_id, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        b = client.messages.batches.retrieve(batch_id)
        if b.processing_status == "ended":
            return b
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} did not end")


def test_batch_life_cycle(client):
    batch = client.messages.batches.create(requests=requests(5))
    assert batch.processing_status == "in_progress" and batch.type == "message_batch"
    assert batch.request_counts.processing == 5 and batch.request_counts.succeeded == 0 and batch.results_url is None
    assert batch.created_at.tzinfo and batch.expires_at > batch.created_at
    ended = wait(client, batch.id)
    assert ended.request_counts.succeeded == 5 and ended.request_counts.processing == 0
    assert ended.ended_at >= ended.created_at and ended.results_url.startswith("http://127.0.0.1:")
    results = list(client.messages.batches.results(batch.id))
    assert sorted(r.custom_id for r in results) == [f"r{i}" for i in range(5)]
    for r in results:
        assert r.result.type == "succeeded"
        message = r.result.message
        answer = json.loads(message.content[0].text)
        jsonschema.validate(answer, SCHEMA)
        assert answer["ticket_id"] == f"T-{r.custom_id[1:]}" and answer["category"] == "billing"
        assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0 and message.stop_reason == "end_turn"
    deleted = client.messages.batches.delete(batch.id)
    assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


def test_forced_tool_gives_tool_use_input(client):
    batch = client.messages.batches.create(requests=requests(2, style="tool"))
    wait(client, batch.id)
    for r in client.messages.batches.results(batch.id):
        block = r.result.message.content[0]
        assert (
            block.type == "tool_use" and block.name == "record_summary" and r.result.message.stop_reason == "tool_use"
        )
        jsonschema.validate(block.input, SCHEMA)


def test_realtime_message(client):
    message = client.messages.create(**params(style="tool"))
    assert message.content[0].type == "tool_use" and message.content[0].input["ticket_id"] == "T-1"
    plain = client.messages.create(**params(style=None))
    assert plain.content[0].type == "text" and "charged twice" in plain.content[0].text


def test_list_paginates(client):
    ids = [client.messages.batches.create(requests=requests(1)).id for _ in range(5)]
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert [b.id for b in client.messages.batches.list(limit=2)] == ids[::-1]


def test_cancel_then_canceled_results(client, emulator):
    emulator.set_faults({"anthropic": {"time_scale": 5}})
    batch = client.messages.batches.create(requests=requests(10))
    time.sleep(2.5)
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at
    ended = wait(client, batch.id)
    counts = ended.request_counts
    assert counts.canceled > 0 and counts.succeeded > 0 and counts.canceled + counts.succeeded == 10
    types = [r.result.type for r in client.messages.batches.results(batch.id)]
    assert types.count("canceled") == counts.canceled


def test_delete_in_progress_is_refused(client, emulator):
    emulator.set_faults({"anthropic": {"time_scale": 20}})
    batch = client.messages.batches.create(requests=requests(1))
    with pytest.raises(anthropic.ConflictError):
        client.messages.batches.delete(batch.id)


def test_expiry_and_line_errors(client, emulator):
    emulator.set_faults(
        {
            "anthropic": {
                "seed": 2,
                "job_outcome": "expired",
                "expire_done_fraction": 0.5,
                "line_error_rate": 0.3,
                "line_error_status": 529,
            }
        }
    )
    batch = client.messages.batches.create(requests=requests(20))
    ended = wait(client, batch.id)
    results = list(client.messages.batches.results(batch.id))
    by_type = {t: [r for r in results if r.result.type == t] for t in ("succeeded", "errored", "expired")}
    assert len(by_type["expired"]) == 10 == ended.request_counts.expired
    assert len(by_type["errored"]) == ended.request_counts.errored > 0
    assert {r.result.error.error.type for r in by_type["errored"]} == {"overloaded_error"}
    log = emulator.fault_log()["anthropic"]
    assert {r.custom_id for r in by_type["errored"]} == {k for k, v in log.items() if v == "line_error"}


def test_malformed_answers_and_refusals(client, emulator):
    emulator.set_faults(
        {
            "anthropic": {
                "seed": 4,
                "refusal_rate": 0.2,
                "malformed": {"non_json": 0.2, "bad_enum": 0.2},
                "shuffle": True,
            }
        }
    )
    batch = client.messages.batches.create(requests=requests(30))
    wait(client, batch.id)
    log = emulator.fault_log()["anthropic"]
    results = list(client.messages.batches.results(batch.id))
    assert [r.custom_id for r in results] != sorted((r.custom_id for r in results), key=lambda c: int(c[1:]))
    for r in results:
        message = r.result.message
        fault = log.get(r.custom_id)
        if fault == "refusal":
            assert message.stop_reason == "refusal" and message.content == []
        elif fault == "non_json":
            assert message.stop_reason == "max_tokens"
            with pytest.raises(json.JSONDecodeError):
                json.loads(message.content[0].text)
        elif fault == "bad_enum":
            assert json.loads(message.content[0].text)["category"] == "unsure"
        else:
            jsonschema.validate(json.loads(message.content[0].text), SCHEMA)
    assert set(log.values()) == {"refusal", "non_json", "bad_enum"}


def test_invalid_requests_are_rejected_at_create(client, emulator):
    with pytest.raises(anthropic.BadRequestError, match="custom_id"):
        client.messages.batches.create(requests=[{"custom_id": "has space", "params": params()}])
    with pytest.raises(anthropic.BadRequestError, match="Duplicate"):
        client.messages.batches.create(requests=[{"custom_id": "a", "params": params()}] * 2)
    emulator.set_faults({"anthropic": {"job_outcome": "failed_validation"}})
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.create(requests=requests(1))


def test_sdk_retries_429_and_stops_on_should_retry_false(client, emulator):
    emulator.set_faults(
        {
            "anthropic": {
                "http_errors": [
                    {"status": 429, "count": 1, "path": "^/v1/messages/batches$"},
                    {"status": 529, "count": 1, "path": "^/v1/messages/batches$"},
                ]
            }
        }
    )
    client.messages.batches.create(requests=requests(1))
    assert emulator.calls()["POST /anthropic/v1/messages/batches"] == 3
    emulator.set_faults(
        {"anthropic": {"http_errors": [{"status": 429, "count": 5, "path": "^/v1/messages$", "should_retry": False}]}}
    )
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(**params())
    assert emulator.calls()["POST /anthropic/v1/messages"] == 1


def test_both_auth_styles_and_any_version(emulator):
    base = emulator.settings["anthropic"]["base_url"]
    old_style = httpx.get(f"{base}/v1/messages/batches", headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert old_style.status_code == 200
    new_style = httpx.get(
        f"{base}/v1/messages/batches?beta=true",
        headers={"Authorization": "Bearer k", "anthropic-version": "2099-01-01"},
    )
    assert new_style.status_code == 200
    missing = httpx.get(f"{base}/v1/messages/batches")
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"


def test_results_lines_end_with_newline_and_no_blank_lines(client, emulator):
    batch = client.messages.batches.create(requests=requests(3))
    ended = wait(client, batch.id)
    raw = httpx.get(ended.results_url, headers={"x-api-key": "k", "anthropic-version": "2023-06-01"}).content
    assert raw.endswith(b"\n") and b"\n\n" not in raw and len(raw.splitlines()) == 3
    assert datetime.now(UTC) >= ended.ended_at
