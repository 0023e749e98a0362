"""The three OpenAI endpoints a batch can serve, as request bodies and answers.

``/v1/chat/completions`` and ``/v1/responses`` answer the workload's output schema (strict
structured output); ``/v1/embeddings`` returns a vector for the rendered input. A result body is
read by what it is (``chat.completion``, ``response``, or a ``list`` of embeddings), so the
results of any batch parse the same way.
"""

from __future__ import annotations

from typing import Any

from batch_ai.providers.base import ErrorKind, Prompt, RequestOptions, Result, strip_keywords

URLS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "embeddings": "/v1/embeddings"}


def body(prompt: Prompt, options: RequestOptions, unsupported: frozenset[str]) -> dict[str, Any]:
    """The request body for the workload's endpoint."""
    if options.endpoint == "embeddings":
        return embeddings_body(prompt, options)
    schema = strip_keywords(options.output_schema, unsupported)
    if options.endpoint == "responses":
        return {
            "model": options.model,
            "instructions": prompt.system,
            "input": prompt.user,
            "text": {"format": {"type": "json_schema", "name": options.schema_name, "schema": schema, "strict": True}},
            "max_output_tokens": options.max_output_tokens,
            "temperature": options.temperature,
        }
    return {
        "model": options.model,
        "messages": [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.user},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": options.schema_name, "schema": schema, "strict": True},
        },
        "max_completion_tokens": options.max_output_tokens,
        "temperature": options.temperature,
    }


def embeddings_body(prompt: Prompt, options: RequestOptions) -> dict[str, Any]:
    out: dict[str, Any] = {"model": options.model, "input": prompt.user, "encoding_format": "float"}
    if options.dimensions:
        out["dimensions"] = options.dimensions
    return out


def result_from(custom_id: str, body: dict[str, Any]) -> Result:
    """A normalized result from any of the three answers."""
    kind = body.get("object")
    if kind == "list":
        return _from_embeddings(custom_id, body)
    if kind == "response":
        return _from_response(custom_id, body)
    return _from_completion(custom_id, body)


def _from_completion(custom_id: str, body: dict[str, Any]) -> Result:
    usage = body.get("usage") or {}
    tokens = {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0)}
    choices = body.get("choices") or []
    if not choices:
        return Result(custom_id, error_kind=ErrorKind.UNKNOWN, error_message="response has no choices", **tokens)
    message = choices[0].get("message") or {}
    if message.get("refusal"):
        return Result(custom_id, refusal=message["refusal"], **tokens)
    return Result(custom_id, output_text=message.get("content"), **tokens)


def _from_response(custom_id: str, body: dict[str, Any]) -> Result:
    """A Responses API answer: the text of its ``message`` items (or their refusal). An
    ``incomplete`` response keeps what it wrote: validation says what is wrong with it."""
    usage = body.get("usage") or {}
    tokens = {"input_tokens": usage.get("input_tokens", 0), "output_tokens": usage.get("output_tokens", 0)}
    if body.get("status") == "failed" or body.get("error"):
        error = body.get("error") or {}
        message = f"response failed: {error.get('code')}: {error.get('message')}"
        return Result(custom_id, error_kind=ErrorKind.UNKNOWN, error_message=message[:500], **tokens)
    texts, refusal = [], None
    for item in body.get("output") or []:
        if item.get("type") != "message":
            continue
        for part in item.get("content") or []:
            if part.get("type") == "output_text":
                texts.append(part.get("text") or "")
            elif part.get("type") == "refusal":
                refusal = part.get("refusal") or "refused"
    if refusal and not texts:
        return Result(custom_id, refusal=refusal, **tokens)
    if not texts:
        return Result(custom_id, error_kind=ErrorKind.UNKNOWN, error_message="response has no output_text", **tokens)
    return Result(custom_id, output_text="".join(texts), **tokens)


def _from_embeddings(custom_id: str, body: dict[str, Any]) -> Result:
    """An embeddings answer: the first (only) vector, as sent; the validator judges it."""
    usage = body.get("usage") or {}
    data = body.get("data") or []
    first = data[0] if data and isinstance(data[0], dict) else {}
    vector = first.get("embedding")
    tokens = {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": 0}
    if vector is None:
        return Result(custom_id, output_text="", model=body.get("model"), **tokens)
    return Result(custom_id, vector=vector, model=body.get("model"), **tokens)
