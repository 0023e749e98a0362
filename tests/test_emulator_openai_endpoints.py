"""The emulator's ``/v1/embeddings`` and ``/v1/responses``, driven by the unmodified openai SDK,
in batches and in real time: every answer parses strictly as the SDK's own models."""

from __future__ import annotations

import math

import jsonschema
import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.responses import Response

from test_emulator_openai import SCHEMA, results, upload, wait


@pytest.fixture
def client(emulator):
    return openai.OpenAI(api_key="test-key", base_url=emulator.settings["openai"]["base_url"], max_retries=0)


def embedding_line(custom_id: str, text: str, dimensions: int | None = None) -> dict:
    body = {"model": "text-embedding-3-small", "input": text, "encoding_format": "float"}
    if dimensions:
        body["dimensions"] = dimensions
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": body}


def response_line(custom_id: str, ticket: str) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/responses",
        "body": {
            "model": "gpt-4o-mini",
            "instructions": "Summarise the ticket.",
            "input": f"Ticket ID: {ticket}\n<input>\nSubject: Refund\nI was charged twice. Please refund me.\n</input>",
            "text": {"format": {"type": "json_schema", "name": "t", "schema": SCHEMA, "strict": True}},
            "max_output_tokens": 400,
        },
    }


def test_embeddings_batch_answers_parse_as_the_sdk_models(client):
    lines = [embedding_line("a", "How to reset your password"), embedding_line("b", "Refund policy", 256)]
    lines.append(embedding_line("c", "How to reset your password"))  # the same text: the same vector
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    batch = wait(client, batch.id)
    assert (
        batch.status == "completed" and batch.endpoint == "/v1/embeddings" and batch.model == "text-embedding-3-small"
    )
    assert batch.request_counts.completed == 3 and batch.usage.input_tokens > 0 and batch.usage.output_tokens == 0
    out = {x["custom_id"]: x for x in results(client, batch.output_file_id)}
    parsed = {cid: CreateEmbeddingResponse.model_validate(x["response"]["body"]) for cid, x in out.items()}
    assert len(parsed["a"].data[0].embedding) == 1536 and len(parsed["b"].data[0].embedding) == 256
    assert parsed["a"].data[0].embedding == parsed["c"].data[0].embedding  # seeded from the text
    assert parsed["a"].data[0].embedding != parsed["b"].data[0].embedding[:1536]
    for p in parsed.values():
        assert p.object == "list" and p.data[0].object == "embedding" and p.data[0].index == 0
        assert p.usage.prompt_tokens == p.usage.total_tokens > 0
        assert math.isclose(sum(v * v for v in p.data[0].embedding), 1.0, rel_tol=1e-9)


def test_embeddings_in_real_time(client):
    first = client.embeddings.create(model="text-embedding-3-small", input="Exporting your data", dimensions=64)
    again = client.embeddings.create(model="text-embedding-3-small", input="Exporting your data", dimensions=64)
    assert isinstance(first, CreateEmbeddingResponse) and first.model == "text-embedding-3-small"
    assert len(first.data[0].embedding) == 64 and first.data[0].embedding == again.data[0].embedding
    assert len(client.embeddings.create(model="text-embedding-3-large", input="x").data[0].embedding) == 3072


def test_broken_vectors_are_the_faults_asked_for(client, emulator):
    emulator.set_faults({"openai": {"seed": 2, "malformed": {"non_json": 0.3, "missing_field": 0.3, "overlong": 0.3}}})
    lines = [embedding_line(f"r{i}", f"article {i}", 32) for i in range(30)]
    batch = wait(
        client,
        client.batches.create(
            input_file_id=upload(client, lines), endpoint="/v1/embeddings", completion_window="24h"
        ).id,
    )
    vectors = [x["response"]["body"]["data"][0]["embedding"] for x in results(client, batch.output_file_id)]
    lengths = {len(v) for v in vectors}
    assert {0, 32, 33} <= lengths
    assert any(any(isinstance(x, float) and math.isnan(x) for x in v) for v in vectors)


def test_responses_batch_answers_parse_as_the_sdk_models(client):
    lines = [response_line(f"r{i}", f"T-{i}") for i in range(3)]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/responses", completion_window="24h"
    )
    batch = wait(client, batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == 3 and batch.usage.output_tokens > 0
    for x in results(client, batch.output_file_id):
        response = Response.model_validate(x["response"]["body"])
        assert response.status == "completed" and response.output[0].type == "message"
        answer = response.output_text  # the SDK's own property over the output_text parts
        jsonschema.validate(__import__("json").loads(answer), SCHEMA)
        assert f'"T-{x["custom_id"][1:]}"' in answer and response.usage.input_tokens > 0


def test_responses_in_real_time_and_refusals(client, emulator):
    body = response_line("x", "T-7")["body"]
    response = client.responses.create(**body)
    assert isinstance(response, Response) and response.model == "gpt-4o-mini" and '"T-7"' in response.output_text
    emulator.set_faults({"openai": {"refusal_rate": 1.0}})
    refused = client.responses.create(**body)
    assert refused.output[0].content[0].type == "refusal" and refused.output_text == ""


def test_a_line_for_another_endpoint_fails_validation(client):
    batch = client.batches.create(
        input_file_id=upload(client, [embedding_line("a", "text")]), endpoint="/v1/responses", completion_window="24h"
    )
    batch = wait(client, batch.id)
    assert batch.status == "failed" and batch.errors.data[0].code == "mismatched_endpoint"
