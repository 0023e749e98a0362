"""The emulator against the providers' published specifications, one check per discrepancy found:
OpenAI's Batch object, botocore's Bedrock service model, Vertex AI's v1 and v1beta1 message types
(parsed with unknown fields refused), Anthropic's required headers, and JSON Lines split on
``\\n`` only. Each goes through the official SDK, or raw HTTP where the SDK would hide the shape.
"""

from __future__ import annotations

import json
import time

import botocore
import botocore.exceptions
import httpx
import openai
import pytest
from botocore.config import Config
from google.cloud.aiplatform_v1.types import prediction_service as v1_types
from google.cloud.aiplatform_v1beta1.types import prediction_service as v1beta1_types

import test_emulator_bedrock as bedrock_case
import test_emulator_openai as openai_case
import test_emulator_vertex as vertex_case

LINE_SEPARATORS = "a line\u2028and a paragraph\u2029inside one JSON string"
VERTEX_ENDED = {
    "JOB_STATE_SUCCEEDED",
    "JOB_STATE_PARTIALLY_SUCCEEDED",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_EXPIRED",
}


def jsonl(data: bytes) -> list[dict]:
    """JSON Lines as the providers split them: on ``\\n`` only."""
    return [json.loads(line) for line in data.split(b"\n") if line.strip()]


# -- OpenAI -------------------------------------------------------------------------------


@pytest.fixture
def oai(emulator):
    return openai.OpenAI(api_key="test-key", base_url=emulator.settings["openai"]["base_url"], max_retries=2)


def test_openai_batch_names_the_model_its_requests_used(oai):
    batch = oai.batches.create(
        input_file_id=openai_case.upload(oai, [openai_case.line("a"), openai_case.line("b")]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    assert batch.model == "gpt-4o-mini"
    assert openai_case.wait(oai, batch.id).model == "gpt-4o-mini"


def test_openai_batch_cancelled_while_validating_counts_every_request(oai, emulator):
    emulator.set_faults({"openai": {"time_scale": 10}})  # validation lasts 3 s
    batch = oai.batches.create(
        input_file_id=openai_case.upload(oai, [openai_case.line(f"r{i}") for i in range(3)]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    assert oai.batches.cancel(batch.id).status == "cancelling"
    ended = openai_case.wait(oai, batch.id, timeout=30)
    assert ended.status == "cancelled"
    errors = jsonl(oai.files.content(ended.error_file_id).content)
    assert ended.request_counts.total == len(errors) == 3
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert ended.request_counts.completed == 0 and ended.output_file_id is None


def test_openai_splits_files_on_newline_only(oai):
    lines = [openai_case.line("sep", body=LINE_SEPARATORS), openai_case.line("plain")]
    data = b"".join(json.dumps(x, ensure_ascii=False).encode() + b"\n" for x in lines)
    file_id = oai.files.create(file=("in.jsonl", data), purpose="batch").id
    batch = oai.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    ended = openai_case.wait(oai, batch.id)
    assert ended.status == "completed" and ended.request_counts.completed == 2
    out = jsonl(oai.files.content(ended.output_file_id).content)
    assert sorted(x["custom_id"] for x in out) == ["plain", "sep"]


# -- Bedrock ------------------------------------------------------------------------------


def error_shapes() -> dict[str, int]:
    model = botocore.session.get_session().get_service_model("bedrock")
    return {shape.name: shape.metadata["error"]["httpStatusCode"] for shape in model.error_shapes}


def test_bedrock_duplicate_job_name_is_a_400_conflict(aws, emulator):
    bedrock, _, s3 = aws
    bedrock_case.small_minimum(emulator)
    uri = bedrock_case.stage(s3, "in/in.jsonl", [{"recordId": "r0", "modelInput": bedrock_case.claude_body(0)}])
    bedrock_case.create(bedrock, uri, name="same-name")
    with pytest.raises(bedrock.exceptions.ConflictException) as err:
        bedrock_case.create(bedrock, uri, name="same-name")
    status = err.value.response["ResponseMetadata"]["HTTPStatusCode"]
    assert status == error_shapes()["ConflictException"] == 400


def test_bedrock_refuses_unsigned_requests_as_aws_does(emulator):
    s = emulator.settings["bedrock"]
    unsigned = botocore.session.get_session().create_client(
        "bedrock",
        endpoint_url=s["endpoint_url"],
        region_name=s["region"],
        config=Config(signature_version=botocore.UNSIGNED),
    )
    with pytest.raises(botocore.exceptions.ClientError) as err:
        unsigned.list_model_invocation_jobs()
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert err.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"
    basic = httpx.get(f"{s['endpoint_url']}/model-invocation-jobs", headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 403
    assert basic.headers["x-amzn-ErrorType"].startswith("IncompleteSignatureException:")


def test_bedrock_never_names_an_unmodelled_status_internal_server_error(aws, emulator):
    bedrock, _, _ = aws
    emulator.set_faults({"bedrock": {"http_errors": [{"status": 502, "count": 5, "path": "model-invocation-jobs"}]}})
    with pytest.raises(botocore.exceptions.ClientError) as err:
        bedrock.list_model_invocation_jobs()
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502
    assert err.value.response["Error"]["Code"] not in error_shapes()


def test_bedrock_splits_files_on_newline_only(aws, emulator):
    bedrock, _, s3 = aws
    bedrock_case.small_minimum(emulator)
    body = bedrock_case.claude_body(0)
    body["messages"][0]["content"] += LINE_SEPARATORS
    records = [
        {"recordId": "sep", "modelInput": body},
        {"recordId": "plain", "modelInput": bedrock_case.claude_body(1)},
    ]
    s3.put_object(
        Bucket="batch",
        Key="in/in.jsonl",
        Body=b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records),
    )
    arn = bedrock_case.create(bedrock, "s3://batch/in/in.jsonl", name="separators")
    assert bedrock_case.wait(bedrock, arn)["status"] == "Completed"
    out = s3.get_object(Bucket="batch", Key=f"out/{arn.rsplit('/', 1)[-1]}/in.jsonl.out")["Body"].read()
    assert sorted(r["recordId"] for r in jsonl(out)) == ["plain", "sep"]


# -- Vertex AI ----------------------------------------------------------------------------


def vertex_job(gcp, name: str, lines: list[dict]):
    client, gcs = gcp
    return client.batches.create(
        model=vertex_case.MODEL,
        src=vertex_case.stage(gcs, name, lines),
        config={"dest": f"gs://{vertex_case.BUCKET}/out/{name}"},
    )


def test_vertex_v1beta1_rows_parse_strictly_as_v1beta1(gcp):
    client, gcs = gcp
    job = vertex_case.wait(client, vertex_job(gcp, "beta.jsonl", [vertex_case.request(0)]).name)
    (row,) = vertex_case.predictions(gcs, job)
    v1beta1_types.GenerateContentResponse.from_json(json.dumps(row["response"]), ignore_unknown_fields=False)
    assert "trafficType" not in row["response"]["usageMetadata"]


def test_vertex_v1_is_served_with_v1_fields(gcp, emulator):
    _, gcs = gcp
    s = emulator.settings["vertex"]
    base = f"{s['base_url'].rstrip('/')}/v1/projects/{s['project']}/locations/{s['location']}"
    auth = {"Authorization": "Bearer test-token"}
    body = {
        "displayName": "v1-job",
        "model": f"publishers/google/models/{vertex_case.MODEL}",
        "inputConfig": {
            "instancesFormat": "jsonl",
            "gcsSource": {"uris": [vertex_case.stage(gcs, "v1.jsonl", [vertex_case.request(1)])]},
        },
        "outputConfig": {
            "predictionsFormat": "jsonl",
            "gcsDestination": {"outputUriPrefix": f"gs://{vertex_case.BUCKET}/out/v1"},
        },
    }
    created = httpx.post(f"{base}/batchPredictionJobs", json=body, headers=auth).raise_for_status().json()
    job_id = created["name"].rsplit("/", 1)[-1]
    deadline = time.monotonic() + 30
    while (job := httpx.get(f"{base}/batchPredictionJobs/{job_id}", headers=auth).json())["state"] not in VERTEX_ENDED:
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    blob = job["outputInfo"]["gcsOutputDirectory"].removeprefix(f"gs://{vertex_case.BUCKET}/") + "/predictions.jsonl"
    (row,) = jsonl(gcs.bucket(vertex_case.BUCKET).blob(blob).download_as_bytes())
    v1_types.GenerateContentResponse.from_json(json.dumps(row["response"]), ignore_unknown_fields=False)
    assert row["response"]["usageMetadata"]["trafficType"] == "ON_DEMAND"
    realtime = httpx.post(
        f"{base}/publishers/google/models/{vertex_case.MODEL}:generateContent",
        json={"contents": vertex_case.request(2)["contents"]},
        headers=auth,
    ).json()
    v1_types.GenerateContentResponse.from_json(json.dumps(realtime), ignore_unknown_fields=False)


@pytest.mark.parametrize(
    ("case", "faults", "state"),
    [
        ("empty_input", {}, "JOB_STATE_SUCCEEDED"),
        ("cancelled_while_pending", {"time_scale": 10}, "JOB_STATE_CANCELLED"),
        ("expired_with_no_rows", {"job_outcome": "expired", "expire_done_fraction": 0.0}, "JOB_STATE_EXPIRED"),
    ],
)
def test_vertex_job_with_no_rows_done_ends_and_stays_readable(gcp, emulator, case, faults, state):
    client, gcs = gcp
    emulator.set_faults({"vertex": faults})
    lines = [] if case == "empty_input" else [vertex_case.request(i) for i in range(2)]
    job = vertex_job(gcp, f"{case}.jsonl", lines)
    if case == "cancelled_while_pending":
        client.batches.cancel(name=job.name)
    ended = vertex_case.wait(client, job.name, timeout=30)
    assert ended.state.name == state
    assert client.batches.get(name=job.name).state.name == state  # read again: still answers
    assert any(j.name == job.name for j in client.batches.list())  # and so does the list holding it
    directory = ended.dest.gcs_uri if ended.dest else None
    assert directory
    names = [b.name for b in gcs.list_blobs(vertex_case.BUCKET, prefix=f"out/{case}")]
    assert not [n for n in names if n.endswith("predictions.jsonl")], names  # no rows: no predictions file


def test_vertex_splits_files_on_newline_only(gcp):
    client, gcs = gcp
    job = vertex_job(gcp, "sep.jsonl", [vertex_case.request(0, body=LINE_SEPARATORS), vertex_case.request(1)])
    ended = vertex_case.wait(client, job.name)
    assert ended.state.name == "JOB_STATE_SUCCEEDED"
    blob = ended.output_info.gcs_output_directory.removeprefix(f"gs://{vertex_case.BUCKET}/") + "/predictions.jsonl"
    rows = jsonl(gcs.bucket(vertex_case.BUCKET).blob(blob).download_as_bytes())
    assert sorted(r["request"]["labels"]["custom_id"] for r in rows) == ["r0", "r1"]
    assert all("response" in r for r in rows)


# -- Anthropic ----------------------------------------------------------------------------


def test_anthropic_results_split_on_newline_only(emulator):
    import anthropic

    from test_emulator_anthropic import requests, wait

    client = anthropic.Anthropic(api_key="k", base_url=emulator.settings["anthropic"]["base_url"])
    batch_requests = requests(2)
    batch_requests[0]["params"]["messages"][0]["content"] += LINE_SEPARATORS
    ended = wait(client, client.messages.batches.create(requests=batch_requests).id)
    raw = httpx.get(ended.results_url, headers={"x-api-key": "k", "anthropic-version": "2023-06-01"}).content
    assert len(jsonl(raw)) == 2
    assert sorted(r.custom_id for r in client.messages.batches.results(ended.id)) == ["r0", "r1"]


def test_anthropic_requires_the_version_header(emulator):
    base = emulator.settings["anthropic"]["base_url"]
    missing = httpx.get(f"{base}/v1/messages/batches", headers={"x-api-key": "k"})
    assert missing.status_code == 400
    assert missing.json()["type"] == "error"
    assert missing.json()["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }
    given = httpx.get(f"{base}/v1/messages/batches", headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert given.status_code == 200
