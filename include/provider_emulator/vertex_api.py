"""Vertex AI Gemini wire protocol: batchPredictionJobs and generateContent, for google-genai.

Paths are ``/vertex/v1beta1/projects/{p}/locations/{l}/...`` (the SDK's ``v1beta1`` under the
base URL it is given). Jobs read their JSONL input from GCS and write
``<prefix>/prediction-model-<timestamp>/predictions.jsonl`` back, every line echoing its
request. Only HTTP 200 is ever returned on success (the SDK raises on 201 and 204), job ids
are all digits, int64 counts are strings, timestamps RFC 3339.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from provider_emulator import core, embeddings
from provider_emulator.faults import ProviderFaults

#: the API versions served: the SDKs call v1beta1 (google-genai) or v1, and each answers with the
#: fields of its own version (``usageMetadata.trafficType`` exists in v1 only)
VERSIONS = ("v1", "v1beta1")
STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
TERMINAL = {
    "JOB_STATE_SUCCEEDED",
    "JOB_STATE_PARTIALLY_SUCCEEDED",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_EXPIRED",
}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": status, "message": message, "status": STATUS.get(status, "UNKNOWN")}}, status_code=status
    )


def normalize_schema(schema: Any) -> Any:
    """Vertex's OpenAPI-style responseSchema (types in capitals) as a JSON Schema."""
    if isinstance(schema, dict):
        out = {k: normalize_schema(v) for k, v in schema.items()}
        if isinstance(out.get("type"), str):
            out["type"] = out["type"].lower()
        if out.get("nullable"):
            out.pop("nullable")
        if out.get("type") == "object" and "properties" in out and "required" not in out:
            out["required"] = list(out["properties"])
        return out
    if isinstance(schema, list):
        return [normalize_schema(v) for v in schema]
    return schema


def _text(parts_holder: Any) -> str:
    if isinstance(parts_holder, dict):
        return "\n".join(str(p.get("text", "")) for p in parts_holder.get("parts") or [])
    return ""


@dataclass
class StoredJob:
    id: str
    project: str
    location: str
    body: dict[str, Any]
    created_at: float
    faults: ProviderFaults
    state: str = "JOB_STATE_PENDING"
    started_at: float | None = None
    ended_at: float | None = None
    updated_at: float = 0.0
    cancel_requested_at: float | None = None
    error: dict[str, Any] | None = None
    stats: dict[str, int] = field(default_factory=dict)
    output_dir: str | None = None
    lines: list[dict[str, Any]] | None = None
    validated: bool = False
    api_version: str = "v1beta1"  # the version of the path the job was created through

    @property
    def name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/batchPredictionJobs/{self.id}"


class VertexEmulator(core.JobFlow):
    def __init__(self, state, gcs) -> None:
        self.state = state
        self.gcs = gcs
        self.jobs: dict[str, StoredJob] = {}
        self.lock = threading.RLock()

    @property
    def faults(self) -> ProviderFaults:
        return self.state.config.vertex

    def generate(
        self, request: dict[str, Any], model_name: str, key: str, *, realtime: bool = False, version: str = "v1beta1"
    ) -> tuple[core.LineOutcome, dict[str, Any]]:
        contents = request.get("contents") or []
        user_text = "\n".join(_text(c) for c in contents if c.get("role", "user") == "user")
        prompt_text = _text(request.get("systemInstruction")) + "\n" + "\n".join(_text(c) for c in contents)
        config = request.get("generationConfig") or {}
        schema = config.get("responseJsonSchema") or (
            normalize_schema(config["responseSchema"]) if config.get("responseSchema") else None
        )
        outcome = core.answer(
            self.faults,
            key,
            schema,
            user_text,
            prompt_text,
            realtime=realtime,
            log=lambda k, f: self.state.log_fault("vertex", k, f),
            model_name=model_name.rsplit("/", 1)[-1],
        )
        if outcome.refused:
            candidate = {
                "index": 0,
                "finishReason": "SAFETY",
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
                ],
            }
        else:
            text = (
                outcome.text if schema is not None or outcome.answer is None else str(outcome.answer.get("answer", ""))
            )
            candidate = {
                "index": 0,
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": "MAX_TOKENS" if outcome.fault == "non_json" else "STOP",
            }
        usage: dict[str, Any] = {
            "promptTokenCount": outcome.input_tokens,
            "candidatesTokenCount": outcome.output_tokens,
            "totalTokenCount": outcome.input_tokens + outcome.output_tokens,
        }
        if version == "v1":
            usage["trafficType"] = "ON_DEMAND"
        return outcome, {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": model_name.rsplit("/", 1)[-1],
            "createTime": core.rfc3339(time.time()),
            "responseId": secrets.token_urlsafe(16),
        }

    # -- the job's life (core.JobFlow) ---------------------------------------------------------

    PHASES = {
        "validating": [(0.0, "JOB_STATE_PENDING")],
        "running": [(0.0, "JOB_STATE_RUNNING")],
        "finalizing": [(0.0, "JOB_STATE_RUNNING")],
    }
    INVALID_INPUT = "Failed to import data. The input is not valid JSON lines."
    _ENDS = {"completed": None, "expired": "JOB_STATE_EXPIRED", "cancelled": "JOB_STATE_CANCELLED"}

    def ended(self, job: StoredJob) -> bool:
        return job.state in TERMINAL

    def size(self, job: StoredJob) -> int:
        return len(job.lines or [])

    def show(self, job: StoredJob, status: str, now: float) -> None:
        if job.state != status:
            job.state, job.updated_at = status, now

    def validate(self, job: StoredJob) -> str | None:
        return self._load_input(job)

    def fail(self, job: StoredJob, problem: Any, at: float) -> None:
        job.error = {"code": 3, "message": problem}
        job.state, job.ended_at, job.updated_at = "JOB_STATE_FAILED", at, at

    def started(self, job: StoredJob, at: float) -> None:
        job.started_at = at

    def finish(self, job: StoredJob, outcome: str, done: int) -> None:
        self._end(job, self._ENDS[outcome], done)

    def _load_input(self, job: StoredJob) -> str | None:
        source = (job.body.get("inputConfig") or {}).get("gcsSource", {}).get("uris") or []
        try:
            if embeddings.is_embedding_model(job.body.get("model", "")):  # rows {"content": text}
                job.lines = [x for uri in source for x in embeddings.vertex_instances(self.gcs.read(uri), uri)]
            else:
                job.lines = [x for uri in source for x in core.jsonl_objects(self.gcs.read(uri), uri, "request")]
        except core.BadInput as exc:
            return str(exc)
        refused = core.rejected_line(job.faults, job.lines)
        if refused:
            job.lines = None
            return f"Failed to import data: line {refused} of the input is not a valid request."
        return None

    def _end(self, job: StoredJob, state: str | None, done: int) -> None:
        lines = job.lines or []
        row = self._embedding_row if embeddings.is_embedding_model(job.body.get("model", "")) else self._row
        out = [row(job, item) for item in lines[:done]]
        failed = sum(1 for x in out if x["status"])
        ok = len(out) - failed
        stamp = datetime.fromtimestamp(job.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        prefix = (
            ((job.body.get("outputConfig") or {}).get("gcsDestination") or {}).get("outputUriPrefix", "").rstrip("/")
        )
        job.output_dir = f"{prefix}/prediction-model-{stamp}"
        if out:  # a job that did no row writes no predictions file (and storage refuses an empty upload)
            data = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in core.shuffled(out, job.faults, job.id))
            self.gcs.write(f"{job.output_dir}/predictions.jsonl", data.encode())
        job.stats = {"successfulCount": ok, "failedCount": failed, "incompleteCount": len(lines) - done}
        if state is None:
            state = (
                "JOB_STATE_SUCCEEDED"
                if failed == 0
                else ("JOB_STATE_PARTIALLY_SUCCEEDED" if ok else "JOB_STATE_FAILED")
            )
            if state == "JOB_STATE_FAILED":
                job.error = {"code": 13, "message": "All requests in the batch failed."}
        job.state, job.ended_at, job.updated_at = state, time.time(), time.time()

    def _row(self, job: StoredJob, item: dict[str, Any]) -> dict[str, Any]:
        """A Gemini prediction row: the request echoed, its response or its error status."""
        request = item["request"]
        key = (request.get("labels") or {}).get("custom_id") or json.dumps(request, sort_keys=True)
        outcome, response = self.generate(request, job.body.get("model", ""), key, version=job.api_version)
        row: dict[str, Any] = {"status": "", "processed_time": core.rfc3339(time.time()), "request": request}
        if outcome.failed:
            row["status"] = _row_error(job.faults.line_error_status)
        else:
            row["response"] = response
        return row

    def _embedding_row(self, job: StoredJob, instance: dict[str, Any]) -> dict[str, Any]:
        """A text-embedding prediction row: the instance echoed, its predictions or its error status."""
        key = (instance.get("labels") or {}).get("custom_id") or json.dumps(instance, sort_keys=True)
        model_name = job.body.get("model", "")
        dims = embeddings.vertex_dimensions(model_name, job.body.get("modelParameters"))
        log = lambda k, f: self.state.log_fault("vertex", k, f)  # noqa: E731
        prediction = embeddings.vertex_prediction(job.faults, instance, dims, key, log=log)
        if prediction is None:
            return {"instance": instance, "status": _row_error(job.faults.line_error_status)}
        return {"instance": instance, "predictions": [prediction], "status": ""}

    def job_obj(self, job: StoredJob) -> dict[str, Any]:
        self.advance(job)
        body = job.body
        obj: dict[str, Any] = {
            "name": job.name,
            "displayName": body.get("displayName", ""),
            "model": body.get("model"),
            "inputConfig": body.get("inputConfig"),
            "outputConfig": body.get("outputConfig"),
            "state": job.state,
            "createTime": core.rfc3339(job.created_at),
            "updateTime": core.rfc3339(job.updated_at or job.created_at),
        }
        if body.get("labels"):
            obj["labels"] = body["labels"]
        if job.started_at:
            obj["startTime"] = core.rfc3339(job.started_at)
        if job.ended_at:
            obj["endTime"] = core.rfc3339(job.ended_at)
        if job.stats:
            obj["completionStats"] = {k: str(v) for k, v in job.stats.items()}
        if job.output_dir:
            obj["outputInfo"] = {"gcsOutputDirectory": job.output_dir}
        if job.error:
            obj["error"] = job.error
        return obj


def _row_error(status: int) -> str:
    return f"{STATUS.get(status, 'INTERNAL')}: {'Internal error encountered.' if status >= 500 else 'Quota exceeded.'}"


def router(emu: VertexEmulator) -> APIRouter:
    both = APIRouter()
    for version in VERSIONS:
        both.include_router(_router(emu, version))
    return both


def _router(emu: VertexEmulator, version: str) -> APIRouter:  # noqa: C901 - its endpoints are counted as one
    r = APIRouter(prefix=f"/vertex/{version}/projects/{{project}}/locations/{{location}}")

    def find(job_id: str) -> StoredJob | None:
        return emu.jobs.get(job_id)

    @r.post("/batchPredictionJobs")
    async def create(project: str, location: str, request: Request):
        body = await request.json()
        missing = [k for k in ("displayName", "model", "inputConfig", "outputConfig") if not body.get(k)]
        if missing:
            return error(400, f"{missing[0]} is required.")
        if not (body["inputConfig"].get("gcsSource") or {}).get("uris"):
            return error(400, "Only gcsSource input is emulated (inputConfig.gcsSource.uris).")
        if not (body["outputConfig"].get("gcsDestination") or {}).get("outputUriPrefix"):
            return error(400, "Only gcsDestination output is emulated (outputConfig.gcsDestination.outputUriPrefix).")
        with emu.lock:
            job = StoredJob(
                str(secrets.randbelow(9 * 10**17) + 10**17),
                project,
                location,
                body,
                time.time(),
                emu.faults.model_copy(deep=True),
                api_version=version,
            )
            emu.jobs[job.id] = job
        emu.state.created["vertex"].append(job.id)
        return emu.job_obj(job)

    @r.get("/batchPredictionJobs")
    def list_jobs(
        project: str, location: str, pageSize: int = 100, pageToken: str | None = None, filter: str | None = None
    ):
        with emu.lock:
            jobs = sorted(
                (j for j in emu.jobs.values() if j.project == project and j.location == location),
                key=lambda j: (j.created_at, j.id),
                reverse=True,
            )
        if filter and filter.startswith("display_name="):
            wanted = filter.split("=", 1)[1].strip().strip('"')
            jobs = [j for j in jobs if j.body.get("displayName") == wanted]
        start = int(pageToken or 0)
        page = jobs[start : start + max(pageSize, 1)]
        result: dict[str, Any] = {"batchPredictionJobs": [emu.job_obj(j) for j in page]}
        if start + len(page) < len(jobs):
            result["nextPageToken"] = str(start + len(page))
        return result

    @r.get("/batchPredictionJobs/{job_id}")
    def get(project: str, location: str, job_id: str):
        job = find(job_id)
        return emu.job_obj(job) if job else error(404, f"BatchPredictionJob {job_id} not found.")

    @r.post("/batchPredictionJobs/{job_action}")
    def cancel(project: str, location: str, job_action: str):
        job_id, _, action = job_action.partition(":")
        job = find(job_id)
        if action != "cancel":
            return error(404, f"Unknown method {action!r}.")
        if job is None:
            return error(404, f"BatchPredictionJob {job_id} not found.")
        emu.advance(job)
        if job.state in TERMINAL:
            return error(400, f"BatchPredictionJob {job_id} is in state {job.state} and cannot be cancelled.")
        with emu.lock:
            job.cancel_requested_at = time.time()
            job.state, job.updated_at = "JOB_STATE_CANCELLING", time.time()
        return {}

    @r.delete("/batchPredictionJobs/{job_id}")
    def delete(project: str, location: str, job_id: str):
        job = find(job_id)
        if job is None:
            return error(404, f"BatchPredictionJob {job_id} not found.")
        emu.advance(job)
        if job.state not in TERMINAL:
            return error(400, f"BatchPredictionJob {job_id} is {job.state}; cancel it before deleting it.")
        with emu.lock:
            del emu.jobs[job_id]
        return {
            "name": f"{job.name}/operations/{secrets.randbelow(10**18)}",
            "done": True,
            "metadata": {"@type": f"type.googleapis.com/google.cloud.aiplatform.{version}.DeleteOperationMetadata"},
        }

    @r.post("/publishers/{publisher}/models/{model_action}")
    async def generate_content(project: str, location: str, publisher: str, model_action: str, request: Request):
        model_id, _, action = model_action.partition(":")
        if action == "predict" and embeddings.is_embedding_model(model_id):
            log = lambda k, f: emu.state.log_fault("vertex", k, f)  # noqa: E731
            status, answer = embeddings.vertex_predict(emu.faults, model_id, await request.json(), log)
            # Python's encoder, as the result files use: a broken vector's NaN is written, not refused
            return (
                Response(json.dumps(answer), media_type="application/json") if status == 200 else error(status, answer)
            )
        if action != "generateContent":
            return error(404, f"Unknown method {action!r}.")
        body = await request.json()
        if not body.get("contents"):
            return error(400, "contents is required.")
        if core.rejected_line(emu.faults, [body]):
            return error(400, "Request contains an invalid argument.")
        outcome, response = emu.generate(
            body,
            f"publishers/{publisher}/models/{model_id}",
            json.dumps(body.get("contents"), sort_keys=True),
            realtime=True,
            version=version,
        )
        if outcome.failed:
            status = emu.faults.line_error_status
            return error(status, "Internal error encountered." if status >= 500 else "Quota exceeded.")
        return response

    return r
