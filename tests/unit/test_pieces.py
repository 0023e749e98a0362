"""The pure pieces, each on its own: job splitting, each adapter's result lines, the retry
policy's decision, the poll decision, the trigger's wall-clock deadline."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime, timedelta

import pytest

from batch_ai.errors import ErrorKind, ProviderCallError, StageError
from batch_ai.operators.base import ProviderCallRetryPolicy
from batch_ai.providers.anthropic import AnthropicBatchProvider
from batch_ai.providers.base import JobInfo, JobStatus
from batch_ai.providers.bedrock import BedrockBatchProvider
from batch_ai.providers.openai import OpenAIBatchProvider
from batch_ai.providers.vertex import VertexBatchProvider
from batch_ai.stages.plan import split_into_jobs
from batch_ai.triggers.batch import BatchJobTrigger
from batch_ai.triggers.polling import MAX_CONSECUTIVE_POLL_FAILURES, BadWaitEvent, JobPoller, check_event

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)

# -- job splitting -----------------------------------------------------------------------------


def test_jobs_respect_the_request_and_byte_limits():
    groups = split_into_jobs([10] * 25, max_requests=10, max_bytes=1000, min_requests=1)
    assert [len(g) for g in groups] == [10, 10, 5] and sum(groups, []) == list(range(25))
    by_bytes = split_into_jobs([400, 400, 400, 400], max_requests=100, max_bytes=1000, min_requests=1)
    assert by_bytes == [[0, 1], [2, 3]]


def test_a_tail_below_the_minimum_is_shared_with_the_job_before():
    groups = split_into_jobs([1] * 260, max_requests=200, max_bytes=10**9, min_requests=100)
    assert [len(g) for g in groups] == [130, 130] and sorted(sum(groups, [])) == list(range(260))
    kept = split_into_jobs([1] * 260, max_requests=150, max_bytes=10**9, min_requests=100)
    assert [len(g) for g in kept] == [150, 110]  # a tail at the minimum is a job of its own


# -- each adapter's result lines ---------------------------------------------------------------


def openai_line(**item) -> bytes:
    return json.dumps({"id": "batch_req_1", "custom_id": "r1-a1", **item}).encode()


def test_openai_result_lines():
    ok = OpenAIBatchProvider._parse_line(
        openai_line(
            response={
                "status_code": 200,
                "body": {
                    "choices": [{"message": {"content": '{"a": 1}'}}],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 3},
                },
            }
        ),
        "file-1",
        1,
    )
    assert (ok.custom_id, ok.output_text, ok.input_tokens, ok.output_tokens) == ("r1-a1", '{"a": 1}', 7, 3)
    refused = OpenAIBatchProvider._parse_line(
        openai_line(response={"status_code": 200, "body": {"choices": [{"message": {"refusal": "no"}}]}}), "f", 1
    )
    assert refused.refusal == "no" and refused.answered
    expired = OpenAIBatchProvider._parse_line(openai_line(error={"code": "batch_expired", "message": "late"}), "f", 2)
    assert expired.error_kind == ErrorKind.EXPIRED
    throttled = OpenAIBatchProvider._parse_line(
        openai_line(response={"status_code": 429, "body": {"error": {"message": "slow"}}}), "f", 3
    )
    assert throttled.error_kind == ErrorKind.RATE_LIMITED and "HTTP 429: slow" in throttled.error_message
    cut = OpenAIBatchProvider._parse_line(b'{"custom_id": "r1-a1", "resp', "file-9", 4)
    assert cut.custom_id is None and "result file file-9 line 4 is unreadable" in cut.error_message


def anthropic_line(result) -> bytes:
    return json.dumps({"custom_id": "r2-a1", "result": result}).encode()


def test_anthropic_result_lines():
    message = {"content": [{"type": "tool_use", "input": {"a": 1}}], "usage": {"input_tokens": 5, "output_tokens": 2}}
    ok = AnthropicBatchProvider._parse_line(anthropic_line({"type": "succeeded", "message": message}), "w", 1)
    assert json.loads(ok.output_text) == {"a": 1} and ok.input_tokens == 5
    refusal = {"stop_reason": "refusal", "content": [{"type": "text", "text": "I can't"}]}
    assert AnthropicBatchProvider._parse_line(anthropic_line({"type": "succeeded", "message": refusal}), "w", 1).refusal
    overloaded = {
        "type": "errored",
        "error": {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
    }
    assert AnthropicBatchProvider._parse_line(anthropic_line(overloaded), "w", 2).error_kind == ErrorKind.SERVER_ERROR
    assert (
        AnthropicBatchProvider._parse_line(anthropic_line({"type": "canceled"}), "w", 3).error_kind
        == ErrorKind.CANCELLED
    )
    assert (
        AnthropicBatchProvider._parse_line(anthropic_line({"type": "expired"}), "w", 4).error_kind == ErrorKind.EXPIRED
    )
    assert AnthropicBatchProvider._parse_line(b"[]", "w", 5).custom_id is None


def vertex_row(**row) -> bytes:
    return json.dumps({"request": {"labels": {"custom_id": "r3-a1"}}, **row}).encode()


def test_vertex_prediction_rows():
    response = {
        "candidates": [{"content": {"parts": [{"text": '{"a": 1}'}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4},
    }
    ok = VertexBatchProvider._parse_row(vertex_row(status="", response=response), "gs://b/p.jsonl", 1)
    assert (ok.output_text, ok.input_tokens, ok.output_tokens) == ('{"a": 1}', 9, 4)
    blocked = {"candidates": [{"finishReason": "SAFETY", "content": {"parts": []}}]}
    assert VertexBatchProvider._parse_row(vertex_row(status="", response=blocked), "gs://b/p", 2).refusal
    quota = VertexBatchProvider._parse_row(vertex_row(status="RESOURCE_EXHAUSTED: Quota exceeded."), "gs://b/p", 3)
    assert quota.error_kind == ErrorKind.RATE_LIMITED
    no_id = VertexBatchProvider._parse_row(json.dumps({"request": {}}).encode(), "gs://b/p.jsonl", 4)
    assert no_id.custom_id is None and "gs://b/p.jsonl line 4" in no_id.error_message


def test_bedrock_output_records():
    output = {"content": [{"type": "tool_use", "input": {"a": 2}}], "usage": {"input_tokens": 3, "output_tokens": 1}}
    ok = BedrockBatchProvider._parse_record(json.dumps({"recordId": "r4-a1", "modelOutput": output}).encode(), "s3", 1)
    assert ok.custom_id == "r4-a1" and json.loads(ok.output_text) == {"a": 2}
    failed = BedrockBatchProvider._parse_record(
        json.dumps({"recordId": "r4-a2", "error": {"errorCode": 500, "errorMessage": "boom"}}).encode(), "s3", 2
    )
    assert failed.error_kind == ErrorKind.SERVER_ERROR and failed.error_message == "500: boom"
    assert BedrockBatchProvider._parse_record(b"not json", "s3", 3).custom_id is None


# -- the retry policy's decision ---------------------------------------------------------------


@pytest.mark.parametrize(
    "exception, action, delay",
    [
        (ProviderCallError(ErrorKind.RATE_LIMITED, "429"), "retry", 120),
        (ProviderCallError(ErrorKind.SERVER_ERROR, "500"), "retry", None),
        (ProviderCallError(ErrorKind.UNAVAILABLE, "connection refused"), "retry", None),
        (ProviderCallError(ErrorKind.AUTHENTICATION, "401"), "fail", None),
        (ProviderCallError(ErrorKind.BAD_REQUEST, "400"), "fail", None),
        (StageError("the source file is missing"), "fail", None),
        (RuntimeError("a bug"), "default", None),
    ],
)
def test_the_retry_policy_decides_from_the_kind(exception, action, delay):
    decision = ProviderCallRetryPolicy().evaluate(exception, try_number=1, max_tries=3)
    assert decision.action.value == action
    if delay:
        assert decision.retry_delay.total_seconds() == delay


# -- the poll decision -------------------------------------------------------------------------


def info(status: JobStatus, raw: str = "x") -> JobInfo:
    return JobInfo("job-1", status, raw, {"total": 3})


def test_a_terminal_state_ends_the_wait_and_a_running_one_does_not():
    poller = JobPoller("job-1", NOW + timedelta(hours=1))
    assert poller.on_state(info(JobStatus.RUNNING, "in_progress"), NOW) is None
    event = poller.on_state(info(JobStatus.EXPIRED, "expired"), NOW)
    assert event["status"] == "ended" and event["job_status"] == "expired" and check_event(event) is event


def test_failed_polls_are_ridden_out_then_end_the_wait():
    poller = JobPoller("job-1", NOW + timedelta(hours=1))
    for _ in range(MAX_CONSECUTIVE_POLL_FAILURES - 1):
        assert poller.on_error(ConnectionError("down"), NOW) is None
    poller.on_state(info(JobStatus.RUNNING), NOW)  # an answer resets the count
    assert all(poller.on_error(ConnectionError("down"), NOW) is None for _ in range(MAX_CONSECUTIVE_POLL_FAILURES - 1))
    assert poller.on_error(ConnectionError("down"), NOW)["status"] == "error"


def test_the_deadline_ends_the_wait_and_polls_back_off_without_passing_it():
    poller = JobPoller("job-1", NOW + timedelta(seconds=100), poll_interval=30, max_poll_interval=60)
    assert [round(poller.next_interval(NOW)) for _ in range(4)] == [30, 45, 60, 60]
    assert poller.next_interval(NOW + timedelta(seconds=90)) == pytest.approx(10)
    late = NOW + timedelta(seconds=101)
    assert poller.on_state(info(JobStatus.RUNNING), late)["status"] == "timeout"
    assert JobPoller("job-1", NOW).on_error(TimeoutError("slow"), late)["status"] == "timeout"


@pytest.mark.parametrize(
    "event", [None, {"status": "done"}, {"status": "ended"}, {"status": "ended", "provider_job_id": "j"}]
)
def test_a_resumed_wait_refuses_an_event_it_cannot_have_sent(event):
    with pytest.raises(BadWaitEvent):
        check_event(event)


# -- the trigger's deadline --------------------------------------------------------------------


def test_a_restored_trigger_past_its_deadline_times_out_at_once(monkeypatch):
    with socket.socket() as s:  # a port nothing listens on: the poll fails at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_DEFAULT",
        json.dumps(
            {
                "conn_type": "openai",
                "password": "k",
                "extra": {"openai_client_kwargs": {"base_url": f"http://127.0.0.1:{port}/v1", "max_retries": 0}},
            }
        ),
    )
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    trigger = BatchJobTrigger("openai", "openai_default", "batch_1", past, poll_interval=3600, max_poll_interval=3600)
    classpath, kwargs = trigger.serialize()
    assert classpath == "batch_ai.triggers.batch.BatchJobTrigger" and kwargs["deadline"] == past
    restored = BatchJobTrigger(**kwargs)  # as another triggerer process resumes it

    async def first_event():
        async for event in restored.run():
            return event.payload

    # with an hour between polls, only a timeout at once (not after a poll interval) gets here in time
    event = asyncio.run(asyncio.wait_for(first_event(), timeout=60))
    assert event["status"] == "timeout" and event["provider_job_id"] == "batch_1"
