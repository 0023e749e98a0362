"""Anthropic wire protocol: Message Batches and Messages, as the ``anthropic`` SDK expects them.

A batch is ``in_progress`` until it ends; its request counts stay zero (all ``processing``)
until then, as the real API reports them; results are a JSONL stream at an absolute
``results_url``, in any order.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from provider_emulator import core
from provider_emulator.faults import ProviderFaults

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS = 100_000
PREFIX = "/anthropic"
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_{secrets.token_hex(12)}"}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status)


@dataclass
class StoredBatch:
    id: str
    requests: list[dict[str, Any]]
    created_at: float
    faults: ProviderFaults
    cancel_requested_at: float | None = None
    ended_at: float | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    validated: bool = True  # when it was created


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


def message(
    params: dict[str, Any], key: str, faults: ProviderFaults, log, *, realtime: bool = False
) -> tuple[core.LineOutcome, dict[str, Any]]:
    """The model's answer to Messages params, as a Message object (also Claude's body on Bedrock)."""
    messages = params.get("messages") or []
    user_text = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "user")
    prompt_text = _text(params.get("system")) + "\n" + "\n".join(_text(m.get("content")) for m in messages)
    fmt = ((params.get("output_config") or {}).get("format")) or {}
    tool = None
    choice = params.get("tool_choice") or {}
    if choice.get("type") == "tool":
        tool = next((t for t in params.get("tools") or [] if t.get("name") == choice.get("name")), None)
    schema = fmt.get("schema") if fmt.get("type") == "json_schema" else (tool or {}).get("input_schema")
    outcome = core.answer(
        faults, key, schema, user_text, prompt_text, realtime=realtime, log=log, model_name=str(params.get("model", ""))
    )
    stop_reason = "end_turn"
    if outcome.refused:
        content, stop_reason = [], "refusal"
    elif tool is not None and outcome.answer is not None:
        content = [
            {"type": "tool_use", "id": f"toolu_{secrets.token_hex(12)}", "name": tool["name"], "input": outcome.answer}
        ]
        stop_reason = "tool_use"
    elif schema is None and outcome.answer is not None:
        content = [{"type": "text", "text": str(outcome.answer.get("answer", ""))}]
    else:  # structured output, or a forced tool whose answer was cut off
        content = [{"type": "text", "text": outcome.text or ""}]
        if outcome.fault == "non_json":
            stop_reason = "max_tokens"
    return outcome, {
        "id": f"msg_{secrets.token_hex(12)}",
        "type": "message",
        "role": "assistant",
        "model": params.get("model", "unknown"),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": outcome.input_tokens,
            "output_tokens": outcome.output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "standard" if realtime else "batch",
        },
    }


class AnthropicEmulator(core.JobFlow):
    def __init__(self, state) -> None:
        self.state = state
        self.batches: dict[str, StoredBatch] = {}
        self.lock = threading.RLock()

    @property
    def faults(self) -> ProviderFaults:
        return self.state.config.anthropic

    def message(
        self, params: dict[str, Any], key: str, *, realtime: bool = False
    ) -> tuple[core.LineOutcome, dict[str, Any]]:
        return message(
            params, key, self.faults, lambda k, f: self.state.log_fault("anthropic", k, f), realtime=realtime
        )

    # -- the job's life (core.JobFlow); a batch is validated when it is created --------------

    PHASES = {
        "validating": [(0.0, "in_progress")],
        "running": [(0.0, "in_progress")],
        "finalizing": [(0.0, "in_progress")],
    }
    INVALID_INPUT = None  # refused at create instead
    _UNFINISHED = {"completed": None, "expired": "expired", "cancelled": "canceled"}

    def ended(self, b: StoredBatch) -> bool:
        return b.ended_at is not None

    def size(self, b: StoredBatch) -> int:
        return len(b.requests)

    def show(self, b: StoredBatch, status: str, now: float) -> None:
        """The status is read off the batch (ended, or a cancel asked for) when it is shown."""

    def finish(self, b: StoredBatch, outcome: str, done: int) -> None:
        self._end(b, done, self._UNFINISHED[outcome])

    def _end(self, b: StoredBatch, done: int, unfinished: str | None) -> None:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        results = []
        for i, req in enumerate(b.requests):
            cid = req["custom_id"]
            if i >= done:
                results.append({"custom_id": cid, "result": {"type": unfinished}})
                counts[unfinished] += 1
                continue
            params = req.get("params") or {}
            missing = [k for k in ("model", "max_tokens", "messages") if k not in params]
            if missing:
                body = error_body(400, f"{missing[0]}: Field required")
                results.append({"custom_id": cid, "result": {"type": "errored", "error": body}})
                counts["errored"] += 1
                continue
            outcome, message = self.message(params, cid)
            if outcome.failed:
                status = b.faults.line_error_status
                body = error_body(status, "Internal server error" if status >= 500 else "Rate limited")
                results.append({"custom_id": cid, "result": {"type": "errored", "error": body}})
                counts["errored"] += 1
                continue
            results.append({"custom_id": cid, "result": {"type": "succeeded", "message": message}})
            counts["succeeded"] += 1
        b.results = core.shuffled(results, b.faults, b.id)
        b.counts = counts
        b.ended_at = time.time()

    def batch_obj(self, b: StoredBatch, base_url: str) -> dict[str, Any]:
        self.advance(b)
        if b.ended_at is not None:
            status, counts = "ended", b.counts
        else:
            status = "canceling" if b.cancel_requested_at else "in_progress"
            counts = {"processing": len(b.requests), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        return {
            "id": b.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": core.rfc3339(b.created_at),
            "expires_at": core.rfc3339(b.created_at + 24 * 3600),
            "ended_at": core.rfc3339(b.ended_at),
            "cancel_initiated_at": core.rfc3339(b.cancel_requested_at),
            "archived_at": None,
            "results_url": f"{base_url}{PREFIX}/v1/messages/batches/{b.id}/results" if b.ended_at else None,
        }


def router(emu: AnthropicEmulator) -> APIRouter:  # noqa: C901 - its endpoints are counted as one function
    r = APIRouter(prefix=f"{PREFIX}/v1")

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    @r.post("/messages/batches")
    async def create(request: Request):
        body = await request.json()
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return error(400, "requests: at least one request is required")
        if len(requests) > MAX_REQUESTS:
            return error(413, f"requests: at most {MAX_REQUESTS} requests per batch")
        seen = set()
        for n, req in enumerate(requests):
            cid = req.get("custom_id") if isinstance(req, dict) else None
            if not isinstance(cid, str) or not CUSTOM_ID.match(cid):
                return error(400, f"requests.{n}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
            if cid in seen:
                return error(400, f"Duplicate custom_id: {cid}")
            seen.add(cid)
        if emu.faults.job_outcome == "failed_validation":
            return error(400, "requests.0.params: the batch could not be validated")
        refused = core.rejected_line(emu.faults, requests)
        if refused:
            return error(400, f"requests.{refused - 1}.params: the request could not be validated")
        with emu.lock:
            b = StoredBatch(
                f"msgbatch_{secrets.token_hex(12)}", requests, time.time(), emu.faults.model_copy(deep=True)
            )
            emu.batches[b.id] = b
        emu.state.created["anthropic"].append(b.id)
        return emu.batch_obj(b, base(request))

    @r.get("/messages/batches")
    def list_batches(request: Request, limit: int = 20, after_id: str | None = None, before_id: str | None = None):
        with emu.lock:
            items = sorted(emu.batches.values(), key=lambda b: (b.created_at, b.id), reverse=True)
        ids = [b.id for b in items]
        if after_id:
            items = items[ids.index(after_id) + 1 :] if after_id in ids else []
            page, has_more = items[:limit], len(items) > limit
        elif before_id:
            items = items[: ids.index(before_id)] if before_id in ids else []
            page, has_more = items[-limit:], len(items) > limit
        else:
            page, has_more = items[:limit], len(items) > limit
        data = [emu.batch_obj(b, base(request)) for b in page]
        return {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    @r.get("/messages/batches/{batch_id}")
    def retrieve(batch_id: str, request: Request):
        b = emu.batches.get(batch_id)
        return emu.batch_obj(b, base(request)) if b else error(404, f"No message batch found with id '{batch_id}'")

    @r.post("/messages/batches/{batch_id}/cancel")
    def cancel(batch_id: str, request: Request):
        b = emu.batches.get(batch_id)
        if b is None:
            return error(404, f"No message batch found with id '{batch_id}'")
        emu.advance(b)
        with emu.lock:
            if b.ended_at is None and b.cancel_requested_at is None:
                b.cancel_requested_at = time.time()
        return emu.batch_obj(b, base(request))

    @r.delete("/messages/batches/{batch_id}")
    def delete(batch_id: str):
        b = emu.batches.get(batch_id)
        if b is None:
            return error(404, f"No message batch found with id '{batch_id}'")
        emu.advance(b)
        if b.ended_at is None:
            return error(
                409, f"Batch {batch_id} is still processing; cancel it and wait for it to end before deleting it"
            )
        with emu.lock:
            del emu.batches[batch_id]
        return {"id": batch_id, "type": "message_batch_deleted"}

    @r.get("/messages/batches/{batch_id}/results")
    def results(batch_id: str):
        b = emu.batches.get(batch_id)
        if b is None:
            return error(404, f"No message batch found with id '{batch_id}'")
        emu.advance(b)
        if b.ended_at is None:
            return error(
                400, f"Batch {batch_id} has not ended; results are available once processing_status is 'ended'"
            )
        data = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in b.results)
        return Response(data.encode(), media_type="application/binary")

    @r.post("/messages")
    async def messages(request: Request):
        params = await request.json()
        missing = [k for k in ("model", "max_tokens", "messages") if k not in params]
        if missing:
            return error(400, f"{missing[0]}: Field required")
        if core.rejected_line(emu.faults, [params]):
            return error(400, "messages: the request could not be validated")
        outcome, message = emu.message(params, json.dumps(params.get("messages"), sort_keys=True), realtime=True)
        if outcome.failed:
            status = emu.faults.line_error_status
            return error(status, "Internal server error" if status >= 500 else "Rate limited")
        return message

    return r
