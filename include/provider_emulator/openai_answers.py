"""The emulator's answers on OpenAI's Responses and Embeddings endpoints, shaped as the ``openai``
SDK's own models (``Response``, ``CreateEmbeddingResponse``) parse them.

Embeddings are deterministic unit vectors seeded from the input text, of the requested
``dimensions`` (the model's default otherwise). Of the per-line faults, errors apply as to any
line; a malformed answer is a broken vector (``non_json``: a NaN in it, ``bad_enum``: an
Infinity, ``missing_field``: empty, ``overlong``: one value too many); refusals do not exist here.
"""

from __future__ import annotations

import base64
import math
import secrets
import struct
import time
from typing import Any

from provider_emulator import core, model
from provider_emulator.faults import ProviderFaults

#: Default dimensions of the embedding models the emulator knows (others: 1536).
EMBEDDING_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}

BROKEN = {
    "non_json": lambda v: v[:3] + [math.nan] + v[4:],
    "bad_enum": lambda v: v[:1] + [math.inf] + v[2:],
    "missing_field": lambda v: [],
    "overlong": lambda v: v + [0.0],
}


def _texts(value: Any) -> list[str]:
    """The input of an embeddings request as a list of texts."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return [model.dumps(value)]


def embed(faults: ProviderFaults, body: dict[str, Any], key: str, *, realtime: bool = False, log=None):
    """``(fault, body)``: the embeddings response for a request body, or the line's fault."""
    texts = _texts(body.get("input", ""))
    name = str(body.get("model", "text-embedding-3-small"))
    dims = int(body.get("dimensions") or EMBEDDING_DIMENSIONS.get(name, 1536))
    fault = None
    if faults.realtime_faults or not realtime:
        fault = core.line_fault_for(faults, key, "\n".join(texts))
    if fault == "refusal":
        fault = None  # an embedding is never refused
    if fault and log:
        log(key, fault)
    if fault == "line_error":
        return fault, None
    data = []
    for i, text in enumerate(texts):
        vector = model.embedding(text, dims)
        if fault in BROKEN:
            vector = BROKEN[fault](vector)
        if body.get("encoding_format") == "base64":  # what the SDK asks for unless told otherwise
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(model.estimate_tokens(t) for t in texts)
    return fault, {
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _user_text(value: Any) -> str:
    """The user's part of a Responses API ``input``: a string, or the user messages' text."""
    if isinstance(value, str):
        return value
    parts = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, dict) and item.get("role", "user") == "user":
            content = item.get("content")
            if isinstance(content, list):
                parts += [str(c.get("text", "")) for c in content if isinstance(c, dict)]
            else:
                parts.append(str(content or ""))
    return "\n".join(parts)


def respond(faults: ProviderFaults, body: dict[str, Any], key: str, *, realtime: bool = False, log=None):
    """``(outcome, body)``: the Response object for a Responses API request body."""
    user_text = _user_text(body.get("input", ""))
    prompt_text = f"{body.get('instructions') or ''}\n{user_text}"
    fmt = ((body.get("text") or {}).get("format")) or {}
    schema = fmt.get("schema") if fmt.get("type") == "json_schema" else None
    outcome = core.answer(
        faults, key, schema, user_text, prompt_text, realtime=realtime, log=log, model_name=str(body.get("model", ""))
    )
    if outcome.refused:
        content = [{"type": "refusal", "refusal": core.REFUSAL_TEXT}]
    else:
        content = [{"type": "output_text", "text": outcome.text or "", "annotations": [], "logprobs": []}]
    now = int(time.time())
    return outcome, {
        "id": f"resp_{secrets.token_hex(12)}",
        "object": "response",
        "created_at": now,
        "completed_at": now,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model", "unknown"),
        "output": [
            {
                "type": "message",
                "id": f"msg_{secrets.token_hex(12)}",
                "status": "completed",
                "role": "assistant",
                "content": content,
            }
        ],
        "parallel_tool_calls": True,
        "temperature": body.get("temperature", 1.0),
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "text": body.get("text") or {"format": {"type": "text"}},
        "metadata": {},
        "usage": {
            "input_tokens": outcome.input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": outcome.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": outcome.input_tokens + outcome.output_tokens,
        },
    }
