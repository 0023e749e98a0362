"""Amazon Bedrock wire protocol: model invocation jobs (``bedrock``) and InvokeModel/Converse
(``bedrock-runtime``), for boto3 with ``endpoint_url=<emulator>/bedrock``.

Jobs read JSONL records from S3 (moto's server) and write ``<output>/<job id>/<file>.out`` per
input file plus ``manifest.json.out``. botocore percent-encodes a job ARN into one path segment;
Starlette decodes it, so the routes take the identifier as a path and use its last part.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from provider_emulator import anthropic_api, core, embeddings
from provider_emulator.faults import BedrockFaults

PREFIX = "/bedrock"
REGION = "us-east-1"
ACCOUNT = "123456789012"
JOB_NAME = re.compile(r"^[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}$")
ROLE_ARN = re.compile(r"^arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+$")
#: the error shapes of botocore's Bedrock service model, by the HTTP status each is modelled with
#: (ConflictException, ResourceNotFoundException... are named where they are raised)
ERROR_CODES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
TERMINAL = {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"}


def error(status: int, message: str, code: str | None = None) -> JSONResponse:
    """An error as Bedrock sends it: the shape's name in ``x-amzn-ErrorType``. A status the
    service model has no shape for (an injected 502, say) is sent with no type, as a proxy in
    front of the service would; botocore then names the error by its status."""
    code = code or ERROR_CODES.get(status)
    headers = {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"} if code else {}
    return JSONResponse({"message": message}, status_code=status, headers=headers)


def refuse_unsigned(request: Request) -> JSONResponse | None:
    """What AWS answers a request with no credential (403 ``MissingAuthenticationTokenException``)
    or one not signed with SigV4 (403 ``IncompleteSignatureException``); a Bedrock API key
    (``Authorization: Bearer``) is accepted as the service accepts it."""
    auth = request.headers.get("authorization", "")
    if auth.startswith(("AWS4-HMAC-SHA256 ", "Bearer ")):
        return None
    if not auth:
        return error(403, "Missing Authentication Token", "MissingAuthenticationTokenException")
    return error(
        403,
        "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters.",
        "IncompleteSignatureException",
    )


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _converse_text(content: Any) -> str:
    return "\n".join(str(b.get("text", "")) for b in content or [] if isinstance(b, dict))


def converse(
    body: dict[str, Any], key: str, faults, log, *, realtime: bool = False
) -> tuple[core.LineOutcome, dict[str, Any]]:
    """The model's answer to a Converse request, as a Converse response."""
    messages = body.get("messages") or []
    user_text = "\n".join(_converse_text(m.get("content")) for m in messages if m.get("role") == "user")
    prompt_text = (
        _converse_text(body.get("system")) + "\n" + "\n".join(_converse_text(m.get("content")) for m in messages)
    )
    tool_config = body.get("toolConfig") or {}
    forced = ((tool_config.get("toolChoice") or {}).get("tool") or {}).get("name")
    spec = next(
        (t["toolSpec"] for t in tool_config.get("tools") or [] if t.get("toolSpec", {}).get("name") == forced), None
    )
    schema = ((spec or {}).get("inputSchema") or {}).get("json")
    outcome = core.answer(faults, key, schema, user_text, prompt_text, realtime=realtime, log=log)
    stop = "end_turn"
    if outcome.refused:
        content, stop = [{"text": core.REFUSAL_TEXT}], "content_filtered"
    elif spec is not None and outcome.answer is not None:
        content, stop = (
            [
                {
                    "toolUse": {
                        "toolUseId": f"tooluse_{secrets.token_hex(8)}",
                        "name": spec["name"],
                        "input": outcome.answer,
                    }
                }
            ],
            "tool_use",
        )
    elif schema is None and outcome.answer is not None:
        content = [{"text": str(outcome.answer.get("answer", ""))}]
    else:
        content = [{"text": outcome.text or ""}]
        stop = "max_tokens" if outcome.fault == "non_json" else "end_turn"
    return outcome, {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {
            "inputTokens": outcome.input_tokens,
            "outputTokens": outcome.output_tokens,
            "totalTokens": outcome.input_tokens + outcome.output_tokens,
        },
        "metrics": {"latencyMs": 42},
    }


@dataclass
class StoredJob:
    id: str
    body: dict[str, Any]
    created_at: float
    faults: BedrockFaults
    status: str = "Submitted"
    message: str | None = None
    ended_at: float | None = None
    updated_at: float = 0.0
    cancel_requested_at: float | None = None  # a stop asked for
    records: list[tuple[str, dict[str, Any]]] | None = None  # (input file uri, record)
    counts: dict[str, int] = field(default_factory=dict)
    validated: bool = False

    @property
    def arn(self) -> str:
        return f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-invocation-job/{self.id}"


class BedrockEmulator(core.JobFlow):
    def __init__(self, state, s3) -> None:
        self.state = state
        self.s3 = s3
        self.jobs: dict[str, StoredJob] = {}
        self.tokens: dict[str, str] = {}  # clientRequestToken -> job id
        self.lock = threading.RLock()

    @property
    def faults(self) -> BedrockFaults:
        return self.state.config.bedrock

    def log(self, key: str, fault: str) -> None:
        self.state.log_fault("bedrock", key, fault)

    def answer(
        self, model_input: dict[str, Any], key: str, converse_style: bool
    ) -> tuple[core.LineOutcome, dict[str, Any] | None]:
        if converse_style:
            return converse(model_input, key, self.faults, self.log)
        if "messages" in model_input:  # Anthropic Claude's InvokeModel body
            return anthropic_api.message(model_input, key, self.faults, self.log)
        if "inputText" in model_input and not embeddings.titan_problem(model_input):  # Titan Text Embeddings V2
            return embeddings.titan(self.faults, model_input, key, log=self.log)
        return core.LineOutcome(key, "unsupported", None, None, 0, 0), None

    # -- the job's life (core.JobFlow) ---------------------------------------------------------

    PHASES = {
        "validating": [(0.0, "Submitted"), (0.5, "Validating")],
        "running": [(0.0, "Scheduled"), (0.2, "InProgress")],
        "finalizing": [(0.0, "InProgress")],
    }
    INVALID_INPUT = "The input file contains malformed records."
    _ENDS = {"completed": None, "expired": "Expired", "cancelled": "Stopped"}

    def ended(self, job: StoredJob) -> bool:
        return job.status in TERMINAL

    def size(self, job: StoredJob) -> int:
        return len(job.records or [])

    def show(self, job: StoredJob, status: str, now: float) -> None:
        job.status, job.updated_at = status, now

    def validate(self, job: StoredJob) -> str | None:
        return self._load_input(job)

    def fail(self, job: StoredJob, problem: Any, at: float) -> None:
        job.status, job.message, job.ended_at, job.updated_at = "Failed", problem, at, at

    def finish(self, job: StoredJob, outcome: str, done: int) -> None:
        self._end(job, self._ENDS[outcome], done)

    def _load_input(self, job: StoredJob) -> str | None:
        uri = job.body["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
        files = [u for u in self.s3.list(uri) if u.endswith(".jsonl")] if not uri.endswith(".jsonl") else [uri]
        if not files:
            return f"No .jsonl input files found at {uri}."
        records: list[tuple[str, dict[str, Any]]] = []
        try:
            for f in files:
                for item in core.jsonl_objects(self.s3.read(f), f, "modelInput"):
                    item.setdefault("recordId", f"RECORD{len(records) + 1:011d}")
                    records.append((f, item))
        except core.BadInput as exc:
            return str(exc)
        refused = core.rejected_line(job.faults, [item for _, item in records])
        if refused:
            return f"Record {refused} of the input is not a valid request for model {job.body['modelId']}."
        minimum = job.faults.min_records_per_job
        if len(records) < minimum:
            return (
                f"The job has {len(records)} records; the minimum number of records for a batch inference "
                f"job with model {job.body['modelId']} is {minimum}."
            )
        job.records = records
        return None

    def _end(self, job: StoredJob, status: str | None, done: int) -> None:
        records = job.records or []
        converse_style = job.body.get("modelInvocationType") == "Converse"
        outputs: dict[str, list[dict[str, Any]]] = {}
        ok = failed = tokens_in = tokens_out = 0
        for source, item in records[:done]:
            outcome, model_output = self.answer(item["modelInput"], item["recordId"], converse_style)
            line: dict[str, Any] = {"recordId": item["recordId"], "modelInput": item["modelInput"]}
            if outcome.failed or model_output is None:
                status_code = job.faults.line_error_status if outcome.failed else 400
                line["error"] = {
                    "errorCode": status_code,
                    "errorMessage": "Internal server error."
                    if status_code >= 500
                    else "Too many requests."
                    if status_code == 429
                    else "Model input is not supported for this model.",
                }
                failed += 1
            else:
                line["modelOutput"] = model_output
                tokens_in += outcome.input_tokens
                tokens_out += outcome.output_tokens
                ok += 1
            outputs.setdefault(source, []).append(line)
        out_prefix = job.body["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"].rstrip("/")
        for source, lines in outputs.items():
            data = "".join(
                json.dumps(x, ensure_ascii=False) + "\n" for x in core.shuffled(lines, job.faults, f"{job.id}{source}")
            )
            self.s3.write(f"{out_prefix}/{job.id}/{source.rsplit('/', 1)[-1]}.out", data.encode())
        job.counts = {
            "totalRecordCount": len(records),
            "processedRecordCount": ok + failed,
            "successRecordCount": ok,
            "errorRecordCount": failed,
        }
        manifest = {**job.counts, "inputTokenCount": tokens_in, "outputTokenCount": tokens_out}
        self.s3.write(f"{out_prefix}/{job.id}/manifest.json.out", json.dumps(manifest).encode())
        if status is None:
            status = "Completed" if failed == 0 else ("PartiallyCompleted" if ok else "Failed")
            if status == "Failed":
                job.message = "All records in the job failed."
        job.status, job.ended_at, job.updated_at = status, time.time(), time.time()

    def job_obj(self, job: StoredJob) -> dict[str, Any]:
        self.advance(job)
        b = job.body
        obj = {
            "jobArn": job.arn,
            "jobName": b["jobName"],
            "modelId": b["modelId"],
            "clientRequestToken": b.get("clientRequestToken"),
            "roleArn": b["roleArn"],
            "status": job.status,
            "message": job.message,
            "submitTime": iso(job.created_at),
            "lastModifiedTime": iso(job.updated_at or job.created_at),
            "endTime": iso(job.ended_at),
            "inputDataConfig": b["inputDataConfig"],
            "outputDataConfig": b["outputDataConfig"],
            "timeoutDurationInHours": b.get("timeoutDurationInHours", 24),
            "jobExpirationTime": iso(job.created_at + 3600 * b.get("timeoutDurationInHours", 24)),
            "modelInvocationType": b.get("modelInvocationType", "InvokeModel"),
            **job.counts,
        }
        return {k: v for k, v in obj.items() if v is not None}


def _job_id(identifier: str) -> str:
    return identifier.rsplit("/", 1)[-1]


def router(emu: BedrockEmulator) -> APIRouter:  # noqa: C901 - its endpoints are counted as one function
    r = APIRouter(prefix=PREFIX)

    @r.post("/model-invocation-job")
    async def create(request: Request):
        body = await request.json()
        for name in ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig"):
            if not body.get(name):
                return error(
                    400,
                    f"1 validation error detected: Value null at '{name}' failed to satisfy constraint: "
                    f"Member must not be null",
                )
        if not JOB_NAME.match(body["jobName"]) or len(body["jobName"]) > 63:
            return error(
                400,
                f"1 validation error detected: Value '{body['jobName']}' at 'jobName' failed to satisfy constraint: "
                f"Member must satisfy regular expression pattern",
            )
        if not ROLE_ARN.match(body["roleArn"]):
            return error(
                400,
                f"1 validation error detected: Value '{body['roleArn']}' at 'roleArn' failed to satisfy constraint: "
                f"Member must satisfy regular expression pattern",
            )
        hours = body.get("timeoutDurationInHours", 24)
        if not 24 <= hours <= 168:
            return error(400, "timeoutDurationInHours must be between 24 and 168.")
        for side, cfg in (("input", "inputDataConfig"), ("output", "outputDataConfig")):
            uri = (body[cfg].get(f"s3{side.capitalize()}DataConfig") or {}).get("s3Uri", "")
            if not uri.startswith("s3://"):
                return error(400, f"{cfg}: an s3Uri is required.")
        token = body.get("clientRequestToken")
        with emu.lock:
            if token and token in emu.tokens:  # the native idempotency key: the same job again
                return {"jobArn": emu.jobs[emu.tokens[token]].arn}
            if any(j.body["jobName"] == body["jobName"] for j in emu.jobs.values()):
                return error(400, f"A job named {body['jobName']} already exists.", "ConflictException")
            alphabet = string.ascii_lowercase + string.digits
            job = StoredJob(
                "".join(secrets.choice(alphabet) for _ in range(12)),
                body,
                time.time(),
                emu.faults.model_copy(deep=True),
            )
            emu.jobs[job.id] = job
            if token:
                emu.tokens[token] = job.id
        emu.state.created["bedrock"].append(job.id)
        return {"jobArn": job.arn}

    @r.get("/model-invocation-jobs")
    def list_jobs(
        maxResults: int = 1000,
        nextToken: str | None = None,
        statusEquals: str | None = None,
        nameContains: str | None = None,
        sortOrder: str = "Descending",
    ):
        with emu.lock:
            jobs = sorted(emu.jobs.values(), key=lambda j: (j.created_at, j.id), reverse=sortOrder == "Descending")
        objs = [emu.job_obj(j) for j in jobs]
        if statusEquals:
            objs = [o for o in objs if o["status"] == statusEquals]
        if nameContains:
            objs = [o for o in objs if nameContains in o["jobName"]]
        start = int(nextToken or 0)
        page = objs[start : start + max(1, min(maxResults, 1000))]
        result: dict[str, Any] = {"invocationJobSummaries": page}
        if start + len(page) < len(objs):
            result["nextToken"] = str(start + len(page))
        return result

    @r.get("/model-invocation-job/{identifier:path}")
    def get(identifier: str):
        job = emu.jobs.get(_job_id(identifier))
        return emu.job_obj(job) if job else error(404, f"Could not find job {identifier}")

    @r.post("/model-invocation-job/{identifier:path}/stop")
    def stop(identifier: str):
        job = emu.jobs.get(_job_id(identifier))
        if job is None:
            return error(404, f"Could not find job {identifier}")
        emu.advance(job)
        if job.status in TERMINAL or job.status == "Stopping":
            return error(400, f"Job {job.arn} is {job.status} and cannot be stopped.")
        with emu.lock:
            job.cancel_requested_at = time.time()
            job.status, job.updated_at = "Stopping", time.time()
        return {}

    @r.post("/model/{model_id:path}/invoke")
    async def invoke(model_id: str, request: Request):
        body = json.loads(await request.body() or b"{}")
        titan = embeddings.is_embedding_model(model_id)
        problem = embeddings.titan_problem(body) if titan else None
        if problem or not (titan or "messages" in body):
            return error(
                400, problem or f"Malformed input request for {model_id}: only the Anthropic Messages body is emulated."
            )
        if core.rejected_line(emu.faults, [body]):
            return error(400, f"Malformed input request for {model_id}, please reformat your input and try again.")
        if titan:
            outcome, message = embeddings.titan(emu.faults, body, body["inputText"], realtime=True, log=emu.log)
        else:
            outcome, message = anthropic_api.message(
                body, json.dumps(body.get("messages"), sort_keys=True), emu.faults, emu.log, realtime=True
            )
        if outcome.failed:
            return error(emu.faults.line_error_status, "Internal server error.")
        return Response(
            json.dumps(message).encode(),
            media_type="application/json",
            headers={
                "X-Amzn-Bedrock-Input-Token-Count": str(outcome.input_tokens),
                "X-Amzn-Bedrock-Output-Token-Count": str(outcome.output_tokens),
            },
        )

    @r.post("/model/{model_id:path}/converse")
    async def converse_route(model_id: str, request: Request):
        body = await request.json()
        if not body.get("messages"):
            return error(400, "messages is required.")
        if core.rejected_line(emu.faults, [body]):
            return error(400, "Malformed input request, please reformat your input and try again.")
        outcome, response = converse(
            body, json.dumps(body.get("messages"), sort_keys=True), emu.faults, emu.log, realtime=True
        )
        if outcome.failed:
            return error(emu.faults.line_error_status, "Internal server error.")
        return response

    return r
