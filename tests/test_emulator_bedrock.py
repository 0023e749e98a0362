"""The emulator, driven by unmodified boto3: bedrock model invocation jobs, bedrock-runtime, S3 (moto)."""

from __future__ import annotations

import json
import time
import urllib.parse

import botocore.exceptions
import jsonschema
import pytest

from batch_ai.workloads import load_workload

SCHEMA = load_workload("ticket_summaries").output_schema
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
ROLE = "arn:aws:iam::123456789012:role/BedrockBatch"


def claude_body(i: int) -> dict:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 400,
        "system": "Summarise the ticket.",
        "messages": [
            {
                "role": "user",
                "content": f"Ticket ID: T-{i}\n<input>\nSubject: Refund\nI was charged twice. Please refund.\n</input>",
            }
        ],
        "tools": [{"name": "record_summary", "description": "Record it.", "input_schema": SCHEMA}],
        "tool_choice": {"type": "tool", "name": "record_summary"},
    }


def converse_body(i: int) -> dict:
    return {
        "system": [{"text": "Summarise the ticket."}],
        "messages": [
            {"role": "user", "content": [{"text": f"Ticket ID: T-{i}\n<input>\nMy parcel never arrived.\n</input>"}]}
        ],
        "inferenceConfig": {"maxTokens": 400},
        "toolConfig": {
            "tools": [{"toolSpec": {"name": "record_summary", "inputSchema": {"json": SCHEMA}}}],
            "toolChoice": {"tool": {"name": "record_summary"}},
        },
    }


def stage(s3, key: str, records: list[dict]) -> str:
    s3.put_object(Bucket="batch", Key=key, Body="".join(json.dumps(r) + "\n" for r in records).encode())
    return f"s3://batch/{key}"


def create(bedrock, input_uri, name="tickets-1", **kw):
    return bedrock.create_model_invocation_job(
        jobName=name,
        roleArn=ROLE,
        modelId=MODEL,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": input_uri}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch/out/"}},
        **kw,
    )["jobArn"]


def wait(bedrock, arn, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] in ("Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {arn} did not end")


def outputs(s3, arn, name="in.jsonl"):
    job_id = arn.rsplit("/", 1)[-1]
    body = s3.get_object(Bucket="batch", Key=f"out/{job_id}/{name}.out")["Body"].read().decode()
    manifest = json.loads(s3.get_object(Bucket="batch", Key=f"out/{job_id}/manifest.json.out")["Body"].read())
    return [json.loads(x) for x in body.splitlines()], manifest


def small_minimum(emulator, **faults):
    emulator.set_faults({"bedrock": {"min_records_per_job": 1, **faults}})


def test_job_life_cycle_with_invoke_model_bodies(aws, emulator):
    bedrock, _, s3 = aws
    small_minimum(emulator)
    arn = create(
        bedrock, stage(s3, "in/in.jsonl", [{"recordId": f"r{i}", "modelInput": claude_body(i)} for i in range(5)])
    )
    assert (
        arn.startswith("arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/")
        and len(arn.rsplit("/", 1)[-1]) == 12
    )
    statuses = set()
    while True:
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)  # botocore percent-encodes the ARN in the path
        statuses.add(job["status"])
        if job["status"] == "Completed":
            break
        time.sleep(0.1)
    assert {"InProgress", "Completed"} <= statuses
    assert job["submitTime"] <= job["endTime"] and job["jobExpirationTime"] > job["submitTime"]
    assert job["totalRecordCount"] == job["successRecordCount"] == 5 and job["errorRecordCount"] == 0
    lines, manifest = outputs(s3, arn)
    assert manifest["successRecordCount"] == 5 and manifest["inputTokenCount"] > 0
    for line in lines:
        block = line["modelOutput"]["content"][0]
        assert block["type"] == "tool_use" and line["modelInput"]["messages"]
        jsonschema.validate(block["input"], SCHEMA)
        assert block["input"]["ticket_id"] == f"T-{line['recordId'][1:]}"
    by_id = bedrock.get_model_invocation_job(jobIdentifier=arn.rsplit("/", 1)[-1])
    assert by_id["jobArn"] == arn


def test_converse_style_jobs(aws, emulator):
    bedrock, _, s3 = aws
    small_minimum(emulator)
    arn = create(
        bedrock,
        stage(s3, "conv/in.jsonl", [{"recordId": f"c{i}", "modelInput": converse_body(i)} for i in range(3)]),
        modelInvocationType="Converse",
    )
    wait(bedrock, arn)
    lines, _ = outputs(s3, arn)
    for line in lines:
        tool_use = line["modelOutput"]["output"]["message"]["content"][0]["toolUse"]
        assert tool_use["input"]["category"] == "shipping" and line["modelOutput"]["usage"]["totalTokens"] > 0


def test_client_request_token_deduplicates(aws, emulator):
    bedrock, _, s3 = aws
    small_minimum(emulator)
    uri = stage(s3, "in/in.jsonl", [{"recordId": "r0", "modelInput": claude_body(0)}])
    first = create(bedrock, uri, clientRequestToken="submission-token-1")
    again = create(bedrock, uri, clientRequestToken="submission-token-1")
    assert first == again
    assert len(bedrock.list_model_invocation_jobs()["invocationJobSummaries"]) == 1
    with pytest.raises(bedrock.exceptions.ConflictException):
        create(bedrock, uri, clientRequestToken="submission-token-2")  # same name, new token


def test_list_filters_and_paginates(aws, emulator):
    bedrock, _, s3 = aws
    small_minimum(emulator)
    uri = stage(s3, "in/in.jsonl", [{"recordId": "r0", "modelInput": claude_body(0)}])
    arns = [create(bedrock, uri, name=f"job-{i}") for i in range(5)]
    pages = list(bedrock.get_paginator("list_model_invocation_jobs").paginate(PaginationConfig={"PageSize": 2}))
    assert len(pages) == 3
    assert [s["jobArn"] for p in pages for s in p["invocationJobSummaries"]] == arns[::-1]
    assert [
        s["jobName"] for s in bedrock.list_model_invocation_jobs(nameContains="job-3")["invocationJobSummaries"]
    ] == ["job-3"]


def test_minimum_records_fails_validation(aws):
    bedrock, _, s3 = aws
    arn = create(
        bedrock, stage(s3, "in/in.jsonl", [{"recordId": f"r{i}", "modelInput": claude_body(i)} for i in range(3)])
    )
    job = wait(bedrock, arn)
    assert job["status"] == "Failed" and "minimum number of records" in job["message"] and "100" in job["message"]


def test_stop_keeps_partial_results(aws, emulator):
    bedrock, _, s3 = aws
    small_minimum(emulator, time_scale=5)
    arn = create(
        bedrock, stage(s3, "in/in.jsonl", [{"recordId": f"r{i}", "modelInput": claude_body(i)} for i in range(10)])
    )
    time.sleep(2.5)
    bedrock.stop_model_invocation_job(jobIdentifier=arn)
    assert bedrock.get_model_invocation_job(jobIdentifier=arn)["status"] == "Stopping"
    job = wait(bedrock, arn)
    assert job["status"] == "Stopped" and 0 < job["processedRecordCount"] < 10
    lines, _ = outputs(s3, arn)
    assert len(lines) == job["processedRecordCount"]
    with pytest.raises(bedrock.exceptions.ValidationException):
        bedrock.stop_model_invocation_job(jobIdentifier=arn)


@pytest.mark.parametrize("outcome, status", [("expired", "Expired"), ("failed_validation", "Failed")])
def test_expired_and_failed(aws, emulator, outcome, status):
    bedrock, _, s3 = aws
    small_minimum(emulator, job_outcome=outcome, expire_done_fraction=0.3)
    arn = create(
        bedrock, stage(s3, "in/in.jsonl", [{"recordId": f"r{i}", "modelInput": claude_body(i)} for i in range(10)])
    )
    job = wait(bedrock, arn)
    assert job["status"] == status
    if status == "Expired":
        assert job["processedRecordCount"] == 3 and len(outputs(s3, arn)[0]) == 3


def test_partially_completed_with_record_errors_and_malformed_output(aws, emulator):
    bedrock, _, s3 = aws
    small_minimum(emulator, seed=1, shuffle=True, line_error_rate=0.2, malformed={"bad_enum": 0.2, "wrong_id": 0.2})
    arn = create(
        bedrock, stage(s3, "in/in.jsonl", [{"recordId": f"r{i}", "modelInput": claude_body(i)} for i in range(30)])
    )
    job = wait(bedrock, arn)
    assert job["status"] == "PartiallyCompleted"
    lines, manifest = outputs(s3, arn)
    log = emulator.fault_log()["bedrock"]
    errored = {x["recordId"] for x in lines if "error" in x}
    assert errored == {k for k, v in log.items() if v == "line_error"} and manifest["errorRecordCount"] == len(errored)
    for x in lines:
        if log.get(x["recordId"]) == "bad_enum":
            assert x["modelOutput"]["content"][0]["input"]["category"] == "unsure"
        elif log.get(x["recordId"]) == "wrong_id":
            assert x["modelOutput"]["content"][0]["input"]["ticket_id"].endswith("-X")
    assert [x["recordId"] for x in lines] != sorted((x["recordId"] for x in lines), key=lambda r: int(r[1:]))


def test_runtime_invoke_model_and_converse(aws):
    _, runtime, _ = aws
    r = runtime.invoke_model(modelId=MODEL, body=json.dumps(claude_body(5)), contentType="application/json")
    message = json.loads(r["body"].read())
    assert message["content"][0]["input"]["ticket_id"] == "T-5"
    assert int(r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"]) > 0
    c = runtime.converse(modelId=MODEL, **converse_body(6))
    assert (
        c["stopReason"] == "tool_use" and c["output"]["message"]["content"][0]["toolUse"]["input"]["ticket_id"] == "T-6"
    )
    assert c["usage"]["inputTokens"] > 0


def test_errors_name_the_exception_and_throttling_is_retried(aws, emulator):
    bedrock, _, _ = aws
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.get_model_invocation_job(jobIdentifier="abcdefghijkl")
    with pytest.raises(botocore.exceptions.ParamValidationError):
        bedrock.create_model_invocation_job(
            jobName="x", roleArn=ROLE, modelId=MODEL, inputDataConfig={}, outputDataConfig={}
        )
    emulator.set_faults({"bedrock": {"http_errors": [{"status": 429, "count": 2, "path": "model-invocation-jobs"}]}})
    bedrock.list_model_invocation_jobs()  # botocore's standard mode retries ThrottlingException
    assert emulator.calls()["GET /bedrock/model-invocation-jobs"] == 3
    emulator.set_faults({"bedrock": {"http_errors": [{"status": 500, "count": 5, "path": "model-invocation-jobs"}]}})
    with pytest.raises(botocore.exceptions.ClientError) as err:
        bedrock.list_model_invocation_jobs()
    assert err.value.response["Error"]["Code"] == "InternalServerException"


def test_percent_encoded_arn_reaches_the_job(aws, emulator):
    bedrock, _, s3 = aws
    small_minimum(emulator)
    arn = create(bedrock, stage(s3, "in/in.jsonl", [{"recordId": "r0", "modelInput": claude_body(0)}]))
    import httpx

    raw = httpx.get(
        f"{emulator.settings['bedrock']['endpoint_url']}/model-invocation-job/{urllib.parse.quote(arn, safe='')}",
        headers={"Authorization": "AWS4-HMAC-SHA256 Credential=x"},
    )
    assert raw.status_code == 200 and raw.json()["jobArn"] == arn
