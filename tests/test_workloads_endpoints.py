"""Endpoints at parse time: embeddings only where the capability table offers them and the
adapter sends them, an embedding model only on the embeddings endpoint, the vector's length
agreed between the workload and its schema; and the request each endpoint sends."""

from __future__ import annotations

import json

import pytest

from batch_ai.providers.openai import OpenAIBatchProvider
from batch_ai.workloads import WorkloadError, load_workload, load_workload_file
from test_workloads import edit_spec, include_copy  # noqa: F401 - the fixture


def test_embeddings_on_a_provider_without_them_fail_at_parse(include_copy):  # noqa: F811
    with pytest.raises(WorkloadError) as err:
        path = edit_spec(include_copy, "kb_embeddings", **{"provider.name": "anthropic", "provider.model": None})
        load_workload_file(path)
    text = str(err.value)
    assert "kb_embeddings.yaml" in text and "provider.endpoint" in text
    assert "anthropic offers no embeddings in batch (Anthropic has no embeddings API)" in text
    assert "provider_capabilities.yaml: providers.anthropic.embeddings says so" in text
    assert "Use a provider that does (openai, vertex, bedrock)" in text


def test_switching_every_workload_to_anthropic_keeps_kb_embeddings_on_its_own(include_copy, monkeypatch):  # noqa: F811
    monkeypatch.setenv("BATCH_AI_PROVIDER", "anthropic")  # what make demo PROVIDER=... and the tests do
    assert load_workload_file(include_copy / "workloads" / "kb_embeddings.yaml").spec.provider.name == "openai"
    assert load_workload_file(include_copy / "workloads" / "ticket_summaries.yaml").spec.provider.name == "anthropic"


def kb_embeddings_on(provider: str, monkeypatch):
    """kb_embeddings as ``BATCH_AI_PROVIDER=<provider>`` loads it (the per-process cache cleared
    around it, so no other test sees that workload)."""
    monkeypatch.setenv("BATCH_AI_PROVIDER", provider)
    load_workload.cache_clear()
    try:
        return load_workload("kb_embeddings")
    finally:
        load_workload.cache_clear()


@pytest.mark.parametrize(
    "provider, model, dimensions",
    [("vertex", "text-embedding-005", 768), ("bedrock", "amazon.titan-embed-text-v2:0", 1024)],
)
def test_switching_to_a_provider_with_batch_embeddings_moves_kb_embeddings(
    include_copy,  # noqa: F811
    monkeypatch,
    provider,
    model,
    dimensions,
):
    monkeypatch.setenv("BATCH_AI_PROVIDER", provider)
    kb = load_workload_file(include_copy / "workloads" / "kb_embeddings.yaml")
    # its default embedding model, at that model's length (the schema's 1536 was OpenAI's)
    assert (kb.spec.provider.name, kb.spec.provider.model, kb.spec.provider.dimensions) == (provider, model, dimensions)
    assert kb.output_schema["properties"]["dimensions"]["const"] == dimensions and kb.embeds
    assert kb.record_key().model == model  # another model: other idempotency keys, never two lengths under one
    monkeypatch.delenv("BATCH_AI_PROVIDER")
    with pytest.raises(WorkloadError, match="fixes dimensions.const at 1536"):  # set by hand, the schema still holds
        load_workload_file(
            edit_spec(
                include_copy,
                "kb_embeddings",
                **{"provider.name": provider, "provider.model": None, "provider.dimensions": None},
            )
        )


def test_titan_takes_only_its_own_lengths(include_copy):  # noqa: F811
    path = edit_spec(
        include_copy,
        "kb_embeddings",
        **{"provider.name": "bedrock", "provider.model": None, "provider.dimensions": 768},
    )
    with pytest.raises(
        WorkloadError, match=r"provider.dimensions 768: amazon.titan-embed-text-v2:0 takes only \[256, 512, 1024\]"
    ):
        load_workload_file(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"provider.model": "gpt-4o-mini"}, "provider.model 'gpt-4o-mini' is a generation model"),
        ({"provider.dimensions": 4096}, "provider.dimensions 4096 is over the 1536 of text-embedding-3-small"),
        ({"provider.dimensions": 512}, "fixes dimensions.const at 1536"),
    ],
)
def test_embedding_settings_are_checked_at_parse(include_copy, changes, message):  # noqa: F811
    with pytest.raises(WorkloadError, match=message):
        load_workload_file(edit_spec(include_copy, "kb_embeddings", **changes))


def test_an_embedding_model_cannot_generate(include_copy):  # noqa: F811
    path = edit_spec(include_copy, **{"provider.model": "text-embedding-3-small"})
    with pytest.raises(WorkloadError, match="is an embedding model"):
        load_workload_file(path)
    path = edit_spec(include_copy, **{"provider.name": "anthropic", "provider.endpoint": "responses"})
    with pytest.raises(WorkloadError, match="provider.endpoint is responses, which batch-ai's anthropic adapter"):
        load_workload_file(path)


def test_each_endpoint_builds_its_request(include_copy):  # noqa: F811
    adapter = OpenAIBatchProvider("openai_default")
    kb = load_workload("kb_embeddings")
    record = {"article_id": "KB-1", "title": "Refunds", "body": "Refunds take 5 days."}
    line = adapter.build_request("r1-a1", kb.prompt_for(record), kb.request_options())
    assert line == {
        "custom_id": "r1-a1",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {
            "model": "text-embedding-3-small",
            "input": "Refunds\n\nRefunds take 5 days.",
            "encoding_format": "float",
            "dimensions": 1536,
        },
    }
    edit_spec(include_copy, **{"provider.endpoint": "responses"})
    load_workload.cache_clear()
    tickets = load_workload("ticket_summaries")
    line = adapter.build_request(
        "r2-a1", tickets.prompt_for({"ticket_id": "T-1", "body": "x"}), tickets.request_options()
    )
    body = line["body"]
    assert line["url"] == "/v1/responses" and body["input"].startswith("Ticket ID: T-1")
    assert body["instructions"] and body["text"]["format"]["type"] == "json_schema" and body["text"]["format"]["strict"]
    assert "maxLength" not in json.dumps(body["text"]["format"]["schema"])  # stripped, as for chat


@pytest.mark.parametrize("provider", ["vertex", "bedrock"])
def test_embedding_requests_on_vertex_and_bedrock(monkeypatch, provider):
    from batch_ai.providers import adapter_class

    kb = kb_embeddings_on(provider, monkeypatch)
    record = {"article_id": "KB-1", "title": "Refunds", "body": "Refunds take 5 days."}
    adapter = adapter_class(provider)(kb.conn_id)
    line = adapter.build_request("r1-a1", kb.prompt_for(record), kb.request_options())
    text = "Refunds\n\nRefunds take 5 days."
    if provider == "vertex":  # a text-embedding instance; the length goes on the job (modelParameters)
        assert line == {"content": text, "labels": {"custom_id": "r1-a1"}}
    else:  # Titan Text Embeddings V2's InvokeModel body
        assert line == {"recordId": "r1-a1", "modelInput": {"inputText": text, "normalize": True, "dimensions": 1024}}


def test_the_vector_validator_is_fast_and_strict():
    import time

    from batch_ai.providers.base import Result
    from batch_ai.validation.vectors import VectorValidator, decode

    v = VectorValidator(4, "m")
    ok = v.check(Result("c", vector=[0.1, -0.2, 0.3, 0.4]), "KB-1")
    assert (
        ok.ok
        and ok.output["dimensions"] == 4
        and decode(ok.output["vector"]).tolist() == pytest.approx([0.1, -0.2, 0.3, 0.4], rel=1e-6)
    )
    for vector, why in [
        ([], "vector: empty"),
        ([0.1, 0.2, 0.3], "3 dimensions, not the configured 4"),
        ([0.1, float("nan"), 0.3, 0.4], "value 1 is nan, not a finite number"),
        ([0.1, float("inf"), 0.3, 0.4], "value 1 is inf"),
        ([0.1, 1e300, 0.3, 0.4], "beyond the float32 range"),
        ([0.1, "0.2", 0.3, 0.4], "not a number"),
        ([0.1, None, 0.3, 0.4], "not a number"),
        ([0.0, 0.0, 0.0, 0.0], "every value is zero"),
    ]:
        verdict = v.check(Result("c", vector=vector), "KB-1")
        assert not verdict.ok and why in verdict.errors[0], (vector, verdict.errors)
    assert not v.check(Result("c", output_text=""), "KB-1").ok
    big = VectorValidator(1536, "m")
    vector = [((i * 7919) % 1000) / 1000 - 0.5 for i in range(1536)]
    started = time.perf_counter()
    for _ in range(1000):
        assert big.check(Result("c", vector=vector), "KB-1").ok
    per_record = (time.perf_counter() - started) / 1000
    assert per_record < 0.002, f"{per_record * 1e6:.0f} µs per 1536-float vector"
