"""The emulator's embeddings on Vertex AI (text-embedding models, batch prediction and ``:predict``)
and Amazon Bedrock (Titan Text Embeddings V2, batch records and InvokeModel).

The vector is the one the OpenAI path returns for the same text and length (the seeded unit
vector of :func:`provider_emulator.model.embedding`), and the malformed faults break it the same
way (:data:`provider_emulator.openai_answers.BROKEN`): ``non_json`` a NaN, ``bad_enum`` an
Infinity, ``missing_field`` empty, ``overlong`` one value too many; an embedding is never refused.
"""

from __future__ import annotations

import json
from typing import Any

from provider_emulator import core, model
from provider_emulator.faults import ProviderFaults
from provider_emulator.openai_answers import BROKEN

#: Default (and largest) output length of the Vertex text-embedding models the emulator knows.
VERTEX_DIMENSIONS = {"text-embedding-005": 768, "text-embedding-004": 768, "text-multilingual-embedding-002": 768}
#: The lengths Titan Text Embeddings V2 accepts (1024 by default).
TITAN_DIMENSIONS = (256, 512, 1024)


def is_embedding_model(name: str) -> bool:
    """``publishers/google/models/text-embedding-005``, ``amazon.titan-embed-text-v2:0``..."""
    return "embed" in name.rsplit("/", 1)[-1]


def vector(
    faults: ProviderFaults, key: str, text: str, dimensions: int, *, realtime: bool = False, log=None
) -> tuple[str | None, list[float] | None]:
    """``(fault, values)``: the text's vector after the line's fault (``None`` for a line error)."""
    fault = core.line_fault_for(faults, key, text) if faults.realtime_faults or not realtime else None
    if fault == "refusal":
        fault = None
    if fault and log:
        log(key, fault)
    if fault == "line_error":
        return fault, None
    values = model.embedding(text, dimensions)
    return fault, BROKEN[fault](values) if fault in BROKEN else values


# -- Vertex AI -------------------------------------------------------------------------------


def vertex_instances(data: bytes | None, uri: str) -> list[dict[str, Any]]:
    """The instances of a text-embedding batch input file: ``{"content": text}`` rows (with
    ``task_type``, ``title`` optional)."""
    if data is None:
        raise core.BadInput(f"Input file {uri} does not exist.")
    rows = []
    for n, raw in enumerate(core.jsonl_lines(data), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            raise core.BadInput(f"Line {n} of {uri} is not valid JSON.") from None
        if not isinstance(row, dict) or not isinstance(row.get("content"), str):
            raise core.BadInput(f"Line {n} of {uri} has no 'content' string.")
        rows.append(row)
    return rows


def vertex_dimensions(model_name: str, parameters: dict[str, Any] | None) -> int:
    """``outputDimensionality`` from the job's ``modelParameters`` (or a predict call's
    ``parameters``), else the model's length."""
    default = VERTEX_DIMENSIONS.get(model_name.rsplit("/", 1)[-1], 768)
    wanted = (parameters or {}).get("outputDimensionality")
    return min(int(wanted), default) if wanted else default


def vertex_prediction(
    faults: ProviderFaults, instance: dict[str, Any], dimensions: int, key: str, *, realtime: bool = False, log=None
) -> dict[str, Any] | None:
    """One instance's prediction (``None``: the line's error), as batch rows and ``:predict`` hold it."""
    text = str(instance.get("content", ""))
    _, values = vector(faults, key, text, dimensions, realtime=realtime, log=log)
    if values is None:
        return None
    stats = {"token_count": model.estimate_tokens(text), "truncated": False}
    return {"embeddings": {"values": values, "statistics": stats}}


def vertex_predict(faults: ProviderFaults, model_id: str, body: dict[str, Any], log) -> tuple[int, Any]:
    """A text-embedding model's ``:predict`` (``{"instances": [{"content"}], "parameters"}``):
    ``(200, answer)``, or ``(status, message)`` for the error to send."""
    instances = body.get("instances")
    if not instances or not all(isinstance(x, dict) and isinstance(x.get("content"), str) for x in instances):
        return 400, "instances[].content is required."
    if core.rejected_line(faults, instances):
        return 400, "Request contains an invalid argument."
    dims = vertex_dimensions(model_id, body.get("parameters"))
    predictions = []
    for instance in instances:
        key = json.dumps(instance, sort_keys=True)
        prediction = vertex_prediction(faults, instance, dims, key, realtime=True, log=log)
        if prediction is None:
            status = faults.line_error_status
            return status, "Internal error encountered." if status >= 500 else "Quota exceeded."
        predictions.append(prediction)
    characters = sum(len(x["content"]) for x in instances)
    return 200, {"predictions": predictions, "metadata": {"billableCharacterCount": characters}}


# -- Amazon Bedrock --------------------------------------------------------------------------


def titan_problem(model_input: dict[str, Any]) -> str | None:
    """What Titan Text Embeddings V2 refuses in an InvokeModel body, as the service words it."""
    if not isinstance(model_input.get("inputText"), str) or not model_input["inputText"]:
        return "Malformed input request: #: required key [inputText] not found"
    dims = model_input.get("dimensions", 1024)
    if dims not in TITAN_DIMENSIONS:
        return f"Malformed input request: #/dimensions: {dims} is not a valid enum value"
    return None


def titan(
    faults: ProviderFaults, model_input: dict[str, Any], key: str, *, realtime: bool = False, log=None
) -> tuple[core.LineOutcome, dict[str, Any] | None]:
    """The outcome and Titan's answer (``{"embedding", "inputTextTokenCount"}``) for one body."""
    text = model_input["inputText"]
    tokens = model.estimate_tokens(text)
    fault, values = vector(faults, key, text, int(model_input.get("dimensions", 1024)), realtime=realtime, log=log)
    outcome = core.LineOutcome(key, fault, None, None, tokens, 0)
    if values is None:
        return outcome, None
    return outcome, {"embedding": values, "embeddingsByType": {"float": values}, "inputTextTokenCount": tokens}
