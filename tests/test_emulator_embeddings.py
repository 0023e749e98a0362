"""Embeddings on the emulator's Vertex AI and Bedrock, driven by the unmodified SDKs (google-genai,
google-cloud-storage, boto3), and read back by the adapters' own row parsers: the vector is the
one the OpenAI path gives the same text, of the asked length, and the faults break it the same way."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest

from batch_ai.providers import adapter_for
from batch_ai.providers.bedrock import BedrockBatchProvider
from batch_ai.providers.request_file import RequestFile
from batch_ai.providers.vertex import VertexBatchProvider
from batch_ai.validation.vectors import VectorValidator
from provider_emulator.model import embedding
from test_emulator_bedrock import ROLE, outputs
from test_emulator_bedrock import wait as wait_bedrock
from test_emulator_vertex import BUCKET
from test_emulator_vertex import wait as wait_vertex
from test_workloads_endpoints import kb_embeddings_on

VERTEX_MODEL = "text-embedding-005"
TITAN = "amazon.titan-embed-text-v2:0"
FAULTS = {"seed": 5, "line_error_rate": 0.15, "malformed": {"non_json": 0.1, "missing_field": 0.1, "overlong": 0.1}}


def text(i: int) -> str:
    return f"Refund policy {i}\n\nRefunds reach the card in {i % 7 + 2} working days."


def vertex_rows(gcp, n: int, dimensions: int | None):
    client, gcs = gcp
    lines = [{"content": text(i), "labels": {"custom_id": f"e{i}"}} for i in range(n)]
    gcs.bucket(BUCKET).blob("emb/input.jsonl").upload_from_string("".join(json.dumps(x) + "\n" for x in lines))
    config = {"dest": f"gs://{BUCKET}/emb/output", "display_name": "kb-emb-1"}
    if dimensions:  # what the adapter sends: the SDK has no field for it
        config["http_options"] = {"extra_body": {"modelParameters": {"outputDimensionality": dimensions}}}
    job = client.batches.create(model=VERTEX_MODEL, src=f"gs://{BUCKET}/emb/input.jsonl", config=config)
    assert job.model.endswith(f"publishers/google/models/{VERTEX_MODEL}")
    ended = wait_vertex(client, job.name)
    prefix = ended.output_info.gcs_output_directory.removeprefix(f"gs://{BUCKET}/")
    raw = gcs.bucket(BUCKET).blob(f"{prefix}/predictions.jsonl").download_as_bytes()
    return ended, raw.splitlines()


def test_vertex_text_embedding_batch_job(gcp):
    ended, lines = vertex_rows(gcp, 6, 256)
    assert ended.state.name == "JOB_STATE_SUCCEEDED" and ended.completion_stats.successful_count == 6
    for line in lines:
        row = json.loads(line)
        assert set(row) == {"instance", "predictions", "status"} and row["status"] == ""
        values = row["predictions"][0]["embeddings"]["values"]
        assert values == embedding(row["instance"]["content"], 256)  # the OpenAI path's vector for this text
        assert row["predictions"][0]["embeddings"]["statistics"]["token_count"] > 0
        result = VertexBatchProvider._parse_row(line, "predictions.jsonl", 1)
        assert result.custom_id == row["instance"]["labels"]["custom_id"] and result.input_tokens > 0
        assert VectorValidator(256, VERTEX_MODEL).check(result, "KB-1").ok


def test_vertex_embedding_faults_give_error_rows_and_broken_vectors(gcp, emulator):
    emulator.set_faults({"vertex": FAULTS})
    ended, lines = vertex_rows(gcp, 40, None)
    assert ended.state.name == "JOB_STATE_PARTIALLY_SUCCEEDED"
    log = emulator.fault_log()["vertex"]
    assert {"line_error", "non_json", "missing_field", "overlong"} <= set(log.values())
    validator = VectorValidator(768, VERTEX_MODEL)
    for line in lines:
        result = VertexBatchProvider._parse_row(line, "predictions.jsonl", 1)
        fault = log.get(result.custom_id)
        if fault == "line_error":
            assert result.error_kind == "server_error" and "INTERNAL" in result.error_message
            continue
        verdict = validator.check(result, "KB-1")
        assert verdict.ok == (fault is None), (fault, verdict.errors)
        if fault:
            why = {"non_json": "not a finite number", "missing_field": "empty", "overlong": "769 dimensions"}[fault]
            assert why in verdict.errors[0]


def test_vertex_embed_content_in_real_time(gcp):
    client, _ = gcp
    response = client.models.embed_content(model=VERTEX_MODEL, contents=text(1), config={"output_dimensionality": 64})
    [only] = response.embeddings
    assert only.values == pytest.approx(embedding(text(1), 64)) and len(only.values) == 64
    assert only.statistics.token_count > 0 and response.metadata.billable_character_count == len(text(1))
    default = client.models.embed_content(model=VERTEX_MODEL, contents=text(1))
    assert len(default.embeddings[0].values) == 768


def titan_records(n: int, dimensions: int = 512) -> list[dict]:
    return [
        {"recordId": f"e{i:03d}", "modelInput": {"inputText": text(i), "dimensions": dimensions, "normalize": True}}
        for i in range(n)
    ]


def titan_job(aws, records: list[dict], name: str) -> tuple[dict, list[bytes]]:
    bedrock, _, s3 = aws
    s3.put_object(Bucket="batch", Key="emb/in.jsonl", Body="".join(json.dumps(r) + "\n" for r in records).encode())
    arn = bedrock.create_model_invocation_job(
        jobName=name,
        roleArn=ROLE,
        modelId=TITAN,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://batch/emb/in.jsonl"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch/out/"}},
    )["jobArn"]
    job = wait_bedrock(bedrock, arn)
    if job["status"] == "Failed":
        return job, []
    body = s3.get_object(Bucket="batch", Key=f"out/{arn.rsplit('/', 1)[-1]}/in.jsonl.out")["Body"].read()
    return job, body.splitlines()


def test_bedrock_titan_embedding_job_needs_100_records(aws):
    job, _ = titan_job(aws, titan_records(99), "kb-emb-small")
    assert (
        job["status"] == "Failed" and "minimum number of records" in job["message"] and "99 records" in job["message"]
    )
    job, lines = titan_job(aws, titan_records(100), "kb-emb-100")
    assert job["status"] == "Completed" and job["successRecordCount"] == 100
    _, manifest = outputs(aws[2], job["jobArn"], "in.jsonl")
    assert manifest["inputTokenCount"] > 0 and manifest["outputTokenCount"] == 0
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"recordId", "modelInput", "modelOutput"}
        vector = record["modelOutput"]["embedding"]
        assert vector == embedding(record["modelInput"]["inputText"], 512)
        assert math.isclose(float(np.linalg.norm(vector)), 1.0, rel_tol=1e-9)  # normalize: true
        result = BedrockBatchProvider._parse_record(line, "in.jsonl.out", 1)
        assert (
            result.custom_id == record["recordId"]
            and result.input_tokens == record["modelOutput"]["inputTextTokenCount"]
        )
        assert VectorValidator(512, TITAN).check(result, "KB-1").ok


def test_bedrock_titan_faults_give_record_errors_and_broken_vectors(aws, emulator):
    emulator.set_faults({"bedrock": {**FAULTS, "shuffle": True}})
    job, lines = titan_job(aws, titan_records(120, 256), "kb-emb-faults")
    assert job["status"] == "PartiallyCompleted" and job["errorRecordCount"] > 0
    log = emulator.fault_log()["bedrock"]
    validator = VectorValidator(256, TITAN)
    seen = set()
    for line in lines:
        result = BedrockBatchProvider._parse_record(line, "in.jsonl.out", 1)
        fault = log.get(result.custom_id)
        seen.add(fault)
        if fault == "line_error":
            assert result.error_kind == "server_error" and result.error_message.startswith("500:")
            continue
        verdict = validator.check(result, "KB-1")
        assert verdict.ok == (fault is None), (fault, verdict.errors)
    assert {None, "line_error", "non_json", "missing_field", "overlong"} <= seen


def test_bedrock_titan_invoke_model_in_real_time(aws):
    _, runtime, _ = aws
    body = {"inputText": text(3), "dimensions": 256, "normalize": True}
    response = runtime.invoke_model(modelId=TITAN, body=json.dumps(body), contentType="application/json")
    answer = json.loads(response["body"].read())
    assert answer["embedding"] == pytest.approx(embedding(text(3), 256)) and answer["inputTextTokenCount"] > 0
    bad = {**body, "dimensions": 768}
    with pytest.raises(runtime.exceptions.ValidationException, match="768 is not a valid enum value"):
        runtime.invoke_model(modelId=TITAN, body=json.dumps(bad), contentType="application/json")


@pytest.mark.parametrize("provider", ["vertex", "bedrock"])
def test_the_adapter_submits_collects_and_samples_embeddings(openai_conn, monkeypatch, provider):
    """The adapter itself, through the Airflow connections to the emulator: the job's vector length
    (Vertex: on the job; Bedrock: in each record), results matched by custom id, the sample call."""
    kb = kb_embeddings_on(provider, monkeypatch)
    # a length other than the model's default, so the job's own setting is what gives it
    adapter, options = adapter_for(kb), replace(kb.request_options(), dimensions=256)
    records = {f"c{i}": {"article_id": f"KB-{i}", "title": f"Article {i}", "body": text(i)} for i in range(100)}
    prompts = {c: kb.prompt_for(r) for c, r in records.items()}
    with RequestFile.of(adapter.build_request(c, p, options) for c, p in prompts.items()) as requests:
        job = adapter.submit(
            requests, f"kb-{provider}-1", model=kb.spec.provider.model, labels={}, dimensions=options.dimensions
        )
    deadline = time.monotonic() + 30
    while not job.terminal and time.monotonic() < deadline:
        time.sleep(0.2)
        job = adapter.get_job(job.provider_job_id)
    assert job.status == "completed", job
    results = {r.custom_id: r for r in adapter.iter_results(job)}
    assert set(results) == set(prompts)
    for c, result in results.items():
        assert result.vector == embedding(prompts[c].user, 256) and result.input_tokens > 0
    sample = adapter.realtime("sample-1", prompts["c1"], options)
    assert sample.answered and sample.vector == pytest.approx(embedding(prompts["c1"].user, 256))
    adapter.cleanup(job)
    assert adapter.staged_files(job) == []
