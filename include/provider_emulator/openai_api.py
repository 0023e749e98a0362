"""OpenAI wire protocol: Files, Batches and Chat Completions, as the ``openai`` SDK expects them.

Batches move through ``validating → in_progress → finalizing → completed`` over scaled time,
computed from the clock whenever a batch is read, so no background thread is needed.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from provider_emulator import core, model
from provider_emulator import openai_answers as answers
from provider_emulator.faults import ProviderFaults

ALLOWED_ENDPOINTS = {"/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions"}
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024


def error(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None, param=None):
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}, status_code=status
    )


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class StoredBatch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    created_at: float
    faults: ProviderFaults
    total: int = 0
    status: str = "validating"
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    times: dict[str, int] = field(default_factory=dict)
    cancel_requested_at: float | None = None
    done_lines: int = 0
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0})
    completed: int = 0
    failed: int = 0
    validated: bool = False
    model: str | None = None  # "Model ID used to process the batch": the model its requests name


class OpenAIEmulator(core.JobFlow):
    def __init__(self, state) -> None:
        self.state = state  # the shared emulator state: faults and the fault log
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, StoredBatch] = {}
        self.lock = threading.RLock()

    @property
    def faults(self) -> ProviderFaults:
        return self.state.config.openai

    # -- the model ---------------------------------------------------------------------

    def complete(
        self, body: dict[str, Any], key: str, *, realtime: bool = False
    ) -> tuple[core.LineOutcome, dict[str, Any]]:
        """The model's answer to a request body, as a chat.completion object."""
        messages = body.get("messages") or []
        user_text = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
        prompt_text = "\n".join(str(m.get("content", "")) for m in messages)
        schema = (((body.get("response_format") or {}).get("json_schema")) or {}).get("schema")
        outcome = core.answer(
            self.faults,
            key,
            schema,
            user_text,
            prompt_text,
            realtime=realtime,
            log=lambda k, f: self.state.log_fault("openai", k, f),
            model_name=str(body.get("model", "")),
        )
        message: dict[str, Any] = {"role": "assistant", "content": outcome.text, "refusal": None, "annotations": []}
        if outcome.refused:
            message["refusal"] = core.REFUSAL_TEXT
        return outcome, {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "unknown"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
            "usage": {
                "prompt_tokens": outcome.input_tokens,
                "completion_tokens": outcome.output_tokens,
                "total_tokens": outcome.input_tokens + outcome.output_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
            "service_tier": "default",
            "system_fingerprint": "fp_emulator",
        }

    def answer_line(self, endpoint: str, body: dict[str, Any], key: str, *, realtime: bool = False):
        """``(failed, body)``: the answer on a batch's endpoint to one request body."""
        log = lambda k, f: self.state.log_fault("openai", k, f)  # noqa: E731
        if endpoint == "/v1/embeddings":
            fault, answer = answers.embed(self.faults, body, key, realtime=realtime, log=log)
            return fault == "line_error", answer
        if endpoint == "/v1/responses":
            outcome, answer = answers.respond(self.faults, body, key, realtime=realtime, log=log)
        else:
            outcome, answer = self.complete(body, key, realtime=realtime)
        return outcome.failed, answer

    # -- batches ------------------------------------------------------------------------

    # -- the job's life (core.JobFlow) ---------------------------------------------------------

    PHASES = {
        "validating": [(0.0, "validating")],
        "running": [(0.0, "in_progress")],
        "finalizing": [(0.0, "finalizing")],
    }
    INVALID_INPUT = [
        {"code": "invalid_request", "message": "The input file could not be processed.", "param": None, "line": None}
    ]
    _ENDS = {
        "completed": ("completed", None),
        "expired": ("expired", "batch_expired"),
        "cancelled": ("cancelled", "batch_cancelled"),
    }

    def ended(self, b: StoredBatch) -> bool:
        return b.status in ("completed", "failed", "expired", "cancelled")

    def size(self, b: StoredBatch) -> int:
        return b.total

    def show(self, b: StoredBatch, status: str, now: float) -> None:
        if b.cancel_requested_at is None:
            b.status = status
            if status == "finalizing":
                b.times.setdefault("finalizing_at", int(now))

    def validate(self, b: StoredBatch) -> list[dict[str, Any]]:
        return self._validate_input(b)

    def fail(self, b: StoredBatch, problem: Any, at: float) -> None:
        b.errors, b.status = problem, "failed"
        b.times["failed_at"] = int(at)

    def started(self, b: StoredBatch, at: float) -> None:
        b.times["in_progress_at"] = int(at)

    def finish(self, b: StoredBatch, outcome: str, done: int) -> None:
        status, unfinished_code = self._ENDS[outcome]
        self._finish(b, status, done, unfinished_code)

    def _validate_input(self, b: StoredBatch) -> list[dict[str, Any]]:
        f = self.files.get(b.input_file_id)
        if f is None:
            return [
                {
                    "code": "invalid_file",
                    "message": f"File {b.input_file_id} not found.",
                    "param": "input_file_id",
                    "line": None,
                }
            ]
        problems, seen = [], set()
        lines = [line for line in core.jsonl_lines(f.data) if line.strip()]
        if len(lines) > MAX_REQUESTS or len(f.data) > MAX_BYTES:
            return [
                {
                    "code": "too_many_requests",
                    "message": "The input file exceeds the batch limits.",
                    "param": None,
                    "line": None,
                }
            ]
        for n, line in enumerate(lines, start=1):
            try:
                item = json.loads(line)
                cid = item["custom_id"]
            except (json.JSONDecodeError, KeyError, TypeError):
                problems.append(
                    {
                        "code": "invalid_json_line",
                        "message": "This line is not parseable as valid JSON.",
                        "param": None,
                        "line": n,
                    }
                )
                continue
            if cid in seen:
                problems.append(
                    {
                        "code": "duplicate_custom_id",
                        "message": f"The custom_id {cid} is duplicated.",
                        "param": "custom_id",
                        "line": n,
                    }
                )
            seen.add(cid)
            if item.get("url") != b.endpoint:
                problems.append(
                    {
                        "code": "mismatched_endpoint",
                        "message": f"The url of line {n} does not match the batch endpoint.",
                        "param": "url",
                        "line": n,
                    }
                )
            if item.get("method") != "POST":
                problems.append(
                    {"code": "invalid_method", "message": "Only POST is supported.", "param": "method", "line": n}
                )
            if core.rejected_line(b.faults, [line]):
                problems.append(
                    {
                        "code": "invalid_request",
                        "message": f"Line {n}: the request body is invalid.",
                        "param": "body",
                        "line": n,
                    }
                )
        b.total = len(lines)
        return problems[:100]

    def _finish(self, b: StoredBatch, status: str, done: int, unfinished_code: str | None) -> None:
        f = self.files[b.input_file_id]
        items = [json.loads(line) for line in core.jsonl_lines(f.data) if line.strip()]
        b.total = len(items)  # also when cancelled before validation counted them: one error line each
        out_lines, err_lines = [], []
        for i, item in enumerate(items):
            cid = item["custom_id"]
            rid = f"batch_req_{secrets.token_hex(12)}"
            if i >= done:
                err_lines.append(
                    {
                        "id": rid,
                        "custom_id": cid,
                        "response": None,
                        "error": {
                            "code": unfinished_code,
                            "message": "This request could not be executed before the batch ended.",
                        },
                    }
                )
                continue
            failed, body = self.answer_line(b.endpoint, item.get("body") or {}, cid)
            if failed:
                status_code = b.faults.line_error_status
                err_lines.append(
                    {
                        "id": rid,
                        "custom_id": cid,
                        "error": None,
                        "response": {
                            "status_code": status_code,
                            "request_id": f"req_{secrets.token_hex(16)}",
                            "body": {
                                "error": {
                                    "message": "The server had an error while processing your request."
                                    if status_code >= 500
                                    else "Rate limit reached.",
                                    "type": "server_error" if status_code >= 500 else "requests",
                                    "param": None,
                                    "code": None,
                                }
                            },
                        },
                    }
                )
                continue
            usage = body["usage"]
            b.usage["input_tokens"] += usage.get("prompt_tokens", usage.get("input_tokens", 0))
            b.usage["output_tokens"] += usage.get("completion_tokens", usage.get("output_tokens", 0))
            out_lines.append(
                {
                    "id": rid,
                    "custom_id": cid,
                    "error": None,
                    "response": {
                        "status_code": 200,
                        "request_id": f"req_{secrets.token_hex(16)}",
                        "body": body,
                    },
                }
            )
        out_lines = core.shuffled(out_lines, b.faults, b.id)
        err_lines = core.shuffled(err_lines, b.faults, f"{b.id}:errors")
        now = int(time.time())
        if out_lines:
            b.output_file_id = self._store(f"batch_{b.id}_output.jsonl", "batch_output", out_lines).id
        if err_lines:
            b.error_file_id = self._store(f"batch_{b.id}_error.jsonl", "batch_output", err_lines).id
        # Lines the batch never reached are neither completed nor failed.
        b.completed = len(out_lines)
        b.failed = sum(1 for e in err_lines if e["response"] is not None)
        b.status = status
        b.times[{"completed": "completed_at", "expired": "expired_at", "cancelled": "cancelled_at"}[status]] = now
        if status == "completed":
            b.times.setdefault("finalizing_at", now)

    def _store(self, filename: str, purpose: str, lines: list[dict[str, Any]]) -> StoredFile:
        data = b"".join(json.dumps(x, ensure_ascii=False).encode() + b"\n" for x in lines)
        f = StoredFile(f"file-{secrets.token_hex(12)}", filename, purpose, data, int(time.time()))
        self.files[f.id] = f
        return f

    def batch_obj(self, b: StoredBatch) -> dict[str, Any]:
        self.advance(b)
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            "model": b.model,
            "errors": {"object": "list", "data": b.errors} if b.errors else None,
            "input_file_id": b.input_file_id,
            "completion_window": "24h",
            "status": b.status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "created_at": int(b.created_at),
            "in_progress_at": b.times.get("in_progress_at"),
            "expires_at": int(b.created_at) + 24 * 3600,
            "finalizing_at": b.times.get("finalizing_at"),
            "completed_at": b.times.get("completed_at"),
            "failed_at": b.times.get("failed_at"),
            "expired_at": b.times.get("expired_at"),
            "cancelling_at": int(b.cancel_requested_at) if b.cancel_requested_at else None,
            "cancelled_at": b.times.get("cancelled_at"),
            "request_counts": {"total": b.total, "completed": b.completed, "failed": b.failed},
            "usage": {
                "input_tokens": b.usage["input_tokens"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": b.usage["output_tokens"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": b.usage["input_tokens"] + b.usage["output_tokens"],
            },
            "metadata": b.metadata,
        }


def router(emu: OpenAIEmulator) -> APIRouter:  # noqa: C901 - its endpoints are counted as one function
    r = APIRouter(prefix="/openai/v1")

    @r.post("/files")
    async def create_file(file: UploadFile, request: Request):
        form = await request.form()
        purpose = str(form.get("purpose", ""))
        if purpose not in ("batch", "fine-tune", "assistants", "vision", "user_data", "evals"):
            return error(400, f"Invalid purpose: {purpose!r}", param="purpose")
        data = await file.read()
        with emu.lock:
            f = StoredFile(
                f"file-{secrets.token_hex(12)}", file.filename or "upload.jsonl", purpose, data, int(time.time())
            )
            emu.files[f.id] = f
        return f.obj()

    @r.get("/files")
    def list_files(purpose: str | None = None, limit: int = 10000, after: str | None = None, order: str = "desc"):
        with emu.lock:
            files = sorted(emu.files.values(), key=lambda f: (f.created_at, f.id), reverse=(order == "desc"))
        if purpose:
            files = [f for f in files if f.purpose == purpose]
        return _page([f.obj() for f in files], limit, after)

    @r.get("/files/{file_id}")
    def get_file(file_id: str):
        f = emu.files.get(file_id)
        return f.obj() if f else error(404, f"No such File object: {file_id}", param="id")

    @r.delete("/files/{file_id}")
    def delete_file(file_id: str):
        with emu.lock:
            f = emu.files.pop(file_id, None)
        if f is None:
            return error(404, f"No such File object: {file_id}", param="id")
        return {"id": file_id, "object": "file", "deleted": True}

    @r.get("/files/{file_id}/content")
    def file_content(file_id: str):
        f = emu.files.get(file_id)
        if f is None:
            return error(404, f"No such File object: {file_id}", param="id")
        return Response(f.data, media_type="application/octet-stream")

    @r.post("/batches")
    async def create_batch(request: Request):
        body = await request.json()
        for required in ("input_file_id", "endpoint", "completion_window"):
            if required not in body:
                return error(400, f"Missing required parameter: '{required}'.", param=required)
        if body["endpoint"] not in ALLOWED_ENDPOINTS:
            return error(400, f"Invalid endpoint: {body['endpoint']}", param="endpoint")
        if body["completion_window"] != "24h":
            return error(400, "Invalid completion_window: only '24h' is supported.", param="completion_window")
        metadata = body.get("metadata")
        if metadata is not None and (
            len(metadata) > 16 or any(len(k) > 64 or len(str(v)) > 512 for k, v in metadata.items())
        ):
            return error(
                400, "metadata: at most 16 pairs, keys up to 64 and values up to 512 characters.", param="metadata"
            )
        f = emu.files.get(body["input_file_id"])
        if f is None:
            return error(404, f"No such File object: {body['input_file_id']}", param="input_file_id")
        if f.purpose != "batch":
            return error(400, "The input file must be uploaded with purpose 'batch'.", param="input_file_id")
        with emu.lock:
            b = StoredBatch(
                id=f"batch_{secrets.token_hex(12)}",
                input_file_id=f.id,
                endpoint=body["endpoint"],
                metadata=metadata,
                created_at=time.time(),
                faults=emu.faults.model_copy(deep=True),
                total=0,
                model=_model_of(f.data),
            )
            emu.batches[b.id] = b
        emu.state.created["openai"].append(b.id)
        return emu.batch_obj(b)

    @r.get("/batches")
    def list_batches(limit: int = 20, after: str | None = None):
        with emu.lock:
            batches = sorted(emu.batches.values(), key=lambda b: (b.created_at, b.id), reverse=True)
        return _page([emu.batch_obj(b) for b in batches], min(max(limit, 1), 100), after)

    @r.get("/batches/{batch_id}")
    def get_batch(batch_id: str):
        b = emu.batches.get(batch_id)
        return emu.batch_obj(b) if b else error(404, f"No batch found with id '{batch_id}'.")

    @r.post("/batches/{batch_id}/cancel")
    def cancel_batch(batch_id: str):
        b = emu.batches.get(batch_id)
        if b is None:
            return error(404, f"No batch found with id '{batch_id}'.")
        emu.advance(b)
        if b.status in ("completed", "failed", "expired", "cancelled"):
            return error(409, f"Cannot cancel a batch with status '{b.status}'.")
        with emu.lock:
            if b.cancel_requested_at is None:
                b.cancel_requested_at = time.time()
                b.status = "cancelling"
        return emu.batch_obj(b)

    @r.post("/chat/completions")
    async def chat_completions(request: Request):
        body = await request.json()
        if not body.get("model") or not body.get("messages"):
            return error(400, "'model' and 'messages' are required.")
        if core.rejected_line(emu.faults, [body]):
            return error(400, "The request body is invalid.", param="messages")
        outcome, completion = emu.complete(body, model.dumps(body.get("messages")), realtime=True)
        if outcome.failed:
            return error(
                emu.faults.line_error_status, "The server had an error while processing your request.", "server_error"
            )
        return completion

    @r.post("/responses")
    async def responses(request: Request):
        body = await request.json()
        if not body.get("model") or not body.get("input"):
            return error(400, "'model' and 'input' are required.")
        return _realtime(emu, "/v1/responses", body)

    @r.post("/embeddings")
    async def embeddings(request: Request):
        body = await request.json()
        if not body.get("model") or body.get("input") in (None, "", []):
            return error(400, "'model' and 'input' are required.", param="input")
        if body.get("encoding_format", "float") not in ("float", "base64"):
            return error(400, "encoding_format must be 'float' or 'base64'.", param="encoding_format")
        return _realtime(emu, "/v1/embeddings", body)

    return r


def _realtime(emu: OpenAIEmulator, endpoint: str, body: dict[str, Any]):
    """A real-time answer on one endpoint, or the fault's error."""
    if core.rejected_line(emu.faults, [body]):
        return error(400, "The request body is invalid.", param="input")
    failed, answer = emu.answer_line(endpoint, body, model.dumps(body.get("input")), realtime=True)
    if failed:
        return error(
            emu.faults.line_error_status, "The server had an error while processing your request.", "server_error"
        )
    # Python's encoder, as the result files use: a broken vector's NaN is written, not refused
    return Response(json.dumps(answer, ensure_ascii=False), media_type="application/json")


def _model_of(data: bytes) -> str | None:
    """The model the file's requests name (its first request's ``body.model``)."""
    for line in core.jsonl_lines(data):
        if line.strip():
            try:
                model_id = (json.loads(line).get("body") or {}).get("model")
            except (ValueError, AttributeError):
                return None
            return str(model_id) if model_id else None
    return None


def _page(items: list[dict[str, Any]], limit: int, after: str | None) -> dict[str, Any]:
    if after:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
