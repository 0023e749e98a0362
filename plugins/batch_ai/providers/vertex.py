"""Vertex AI Gemini batch prediction adapter, on google-genai (``vertexai=True``) and GCS.

Credentials and project come from the Airflow Google connection (``GoogleBaseHook``); input is
staged and results are read through the Google provider's ``GCSHook``. Each request carries
its custom id in ``request.labels``, which the prediction rows echo. A job's display name is
the submission token, so a retried submit finds the job it created by listing.

Embeddings (``endpoint: embeddings``) are batch prediction on a text-embedding model: one
``{"content": text}`` instance per line, the custom id in its ``labels`` as in a Gemini request
(the row echoes its instance; that the service keeps that extra key is unconfirmed), and the
vector length as the job's ``modelParameters.outputDimensionality``.

Connection extras this adapter reads besides the Google provider's own: ``batch_ai_staging_uri``
(gs://bucket/prefix, if the workload sets none) and ``vertex_base_url`` (another API endpoint,
e.g. the local emulator).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from typing import Any

from batch_ai.providers.base import (
    BatchProvider,
    ErrorKind,
    JobExpectation,
    JobInfo,
    JobStatus,
    Prompt,
    RequestOptions,
    Result,
    error_kind_for_http_status,
    loads_result_line,
    per_schema,
    strip_keywords,
)
from batch_ai.providers.request_file import RequestFile
from batch_ai.providers.staging import GCSStore, StagingMixin

log = logging.getLogger(__name__)

_STATUS = {
    "JOB_STATE_QUEUED": JobStatus.PENDING,
    "JOB_STATE_PENDING": JobStatus.PENDING,
    "JOB_STATE_RUNNING": JobStatus.RUNNING,
    "JOB_STATE_CANCELLING": JobStatus.RUNNING,
    "JOB_STATE_PAUSED": JobStatus.RUNNING,
    "JOB_STATE_UPDATING": JobStatus.RUNNING,
    "JOB_STATE_SUCCEEDED": JobStatus.COMPLETED,
    # a success with some failed rows; the rows say which (the stock Airflow trigger never ends on it)
    "JOB_STATE_PARTIALLY_SUCCEEDED": JobStatus.COMPLETED,
    "JOB_STATE_FAILED": JobStatus.FAILED,
    "JOB_STATE_CANCELLED": JobStatus.CANCELLED,
    "JOB_STATE_EXPIRED": JobStatus.EXPIRED,
}
_REFUSALS = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY"}
_ROW_ERRORS = {
    "RESOURCE_EXHAUSTED": ErrorKind.RATE_LIMITED,
    "INTERNAL": ErrorKind.SERVER_ERROR,
    "UNAVAILABLE": ErrorKind.SERVER_ERROR,
    "DEADLINE_EXCEEDED": ErrorKind.SERVER_ERROR,
    "INVALID_ARGUMENT": ErrorKind.BAD_REQUEST,
}


@per_schema
def openapi_schema(schema: Any, unsupported: frozenset[str]) -> Any:
    """A JSON Schema as Vertex's responseSchema: OpenAPI types in capitals, no unsupported keywords."""
    schema = strip_keywords(schema, unsupported)

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: convert(v) for k, v in node.items()}
            if isinstance(out.get("type"), str):
                out["type"] = out["type"].upper()
            return out
        if isinstance(node, list):
            return [convert(v) for v in node]
        return node

    return convert(schema)


class VertexBatchProvider(StagingMixin, BatchProvider):
    name = "vertex"
    staging_needs = "Vertex batch jobs stage their files in GCS"

    @functools.cached_property
    def gcs(self):
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        return GCSHook(gcp_conn_id=self.conn_id)

    @functools.cached_property
    def store(self) -> GCSStore:
        return GCSStore(self.gcs)

    @functools.cached_property
    def project(self) -> str:
        return self.gcs.project_id

    def classify(self, exc: BaseException) -> ErrorKind | None:
        import requests
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions
        from google.genai import errors

        if isinstance(exc, errors.APIError):
            return error_kind_for_http_status(exc.code or 500)
        if isinstance(exc, api_exceptions.GoogleAPICallError) and exc.code:
            return error_kind_for_http_status(int(exc.code))
        if isinstance(exc, auth_exceptions.GoogleAuthError):
            return ErrorKind.AUTHENTICATION
        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return ErrorKind.UNAVAILABLE
        return super().classify(exc)

    def _client_kwargs(self) -> dict[str, Any]:
        from google.auth.credentials import AnonymousCredentials
        from google.genai import types
        from google.oauth2.credentials import Credentials

        credentials = self.gcs.get_credentials()
        if isinstance(credentials, AnonymousCredentials):  # a local emulator: any bearer token
            credentials = Credentials(token="anonymous")
        kwargs: dict[str, Any] = {
            "vertexai": True,
            "project": self.project,
            "location": self.region,
            "credentials": credentials,
        }
        base_url = self.conn_extra.get("vertex_base_url")
        if base_url:
            kwargs["http_options"] = types.HttpOptions(base_url=base_url)
        return kwargs

    @functools.cached_property
    def client(self):
        from google import genai

        return genai.Client(**self._client_kwargs())

    def _job_name(self, provider_job_id: str) -> str:
        if provider_job_id.startswith("projects/"):
            return provider_job_id
        return f"projects/{self.project}/locations/{self.region}/batchPredictionJobs/{provider_job_id}"

    # -- requests --------------------------------------------------------------------------

    def _request(self, prompt: Prompt, options: RequestOptions) -> dict[str, Any]:
        return {
            "contents": [{"role": "user", "parts": [{"text": prompt.user}]}],
            "systemInstruction": {"parts": [{"text": prompt.system}]},
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseSchema": openapi_schema(options.output_schema, self.unsupported_keywords),
                "maxOutputTokens": options.max_output_tokens,
                "temperature": options.temperature,
            },
        }

    def build_request(self, custom_id: str, prompt: Prompt, options: RequestOptions) -> dict[str, Any]:
        if options.endpoint == "embeddings":  # a text-embedding instance, echoed in its row
            return {"content": prompt.user, "labels": {"custom_id": custom_id}}
        request = self._request(prompt, options)
        request["labels"] = {"custom_id": custom_id}  # echoed in the prediction row
        return {"request": request}

    # -- jobs ------------------------------------------------------------------------------

    def submit(
        self, requests: RequestFile, token: str, *, model: str, labels: dict[str, str], dimensions: int | None = None
    ) -> JobInfo:
        source = self.stage_input(token, requests)
        config: dict[str, Any] = {"dest": source.rsplit("/", 1)[0] + "/output", "display_name": token}
        if dimensions:  # an embeddings job: the SDK has no field for the model's parameters
            config["http_options"] = {"extra_body": {"modelParameters": {"outputDimensionality": dimensions}}}
        job = self.client.batches.create(model=model, src=source, config=config)
        log.info("created batch prediction job %s for %s", job.name, token)
        return self._info(job)

    def find_job(self, token: str, expected: JobExpectation | None = None) -> JobInfo | None:
        for job in self.client.batches.list(config={"filter": f'display_name="{token}"', "page_size": 100}):
            if job.display_name == token:
                return self._info(job)
        return None

    def get_job(self, provider_job_id: str) -> JobInfo:
        return self._info(self.client.batches.get(name=self._job_name(provider_job_id)))

    async def aget_job(self, provider_job_id: str) -> JobInfo:
        return self._info(await self.client.aio.batches.get(name=self._job_name(provider_job_id)))

    def cancel(self, provider_job_id: str) -> None:
        self.client.batches.cancel(name=self._job_name(provider_job_id))

    def _info(self, job) -> JobInfo:
        state = job.state.name if job.state else "JOB_STATE_PENDING"
        stats = job.completion_stats
        counts = {}
        if stats:
            counts = {
                "succeeded": stats.successful_count or 0,
                "failed": stats.failed_count or 0,
                "incomplete": stats.incomplete_count or 0,
            }
        output_info = getattr(job, "output_info", None)
        return JobInfo(
            provider_job_id=job.name,
            status=_STATUS.get(state, JobStatus.RUNNING),
            raw_status=state,
            counts=counts,
            details={
                "display_name": job.display_name,
                "input_uri": (job.src.gcs_uri or [None])[0] if job.src else None,
                "output_dir": output_info.gcs_output_directory if output_info else None,
            },
            error=f"{job.error.code}: {job.error.message}" if job.error else None,
        )

    # -- results ---------------------------------------------------------------------------

    def iter_results(self, job: JobInfo) -> Iterator[Result]:
        directory = job.details.get("output_dir")
        if not directory:
            return
        for uri in self.store.list(directory.rstrip("/") + "/", ".jsonl"):
            for number, line in enumerate(self.store.lines(uri), start=1):  # streamed
                yield self._parse_row(line, uri, number).sized(line)

    @staticmethod
    def _parse_row(line: bytes, where: str, number: int) -> Result:
        try:
            row = loads_result_line(line)
            echoed = row["request"] if "request" in row else row["instance"]  # Gemini, text embedding
            custom_id = echoed["labels"]["custom_id"]
        except (ValueError, KeyError, TypeError) as exc:
            return Result.unreadable(where, number, f"not a prediction row with our custom id ({exc})")
        if row.get("status"):
            code = str(row["status"]).split(":", 1)[0].strip()
            return Result(
                custom_id, error_kind=_ROW_ERRORS.get(code, ErrorKind.UNKNOWN), error_message=str(row["status"])[:500]
            )
        if "instance" in row:
            predictions = row.get("predictions")
            return _from_embedding(custom_id, predictions[0] if isinstance(predictions, list) and predictions else {})
        return _from_response(custom_id, row.get("response") or {})

    def realtime(self, custom_id: str, prompt: Prompt, options: RequestOptions) -> Result:
        from google.genai import errors

        if options.endpoint == "embeddings":
            return self._embed_now(custom_id, prompt, options)
        request = self._request(prompt, options)
        config = request["generationConfig"]
        try:
            response = self.client.models.generate_content(
                model=options.model,
                contents=prompt.user,
                config={
                    "system_instruction": prompt.system,
                    "response_mime_type": config["responseMimeType"],
                    "response_schema": config["responseSchema"],
                    "max_output_tokens": config["maxOutputTokens"],
                    "temperature": config["temperature"],
                },
            )
        except errors.APIError as exc:
            return Result(
                custom_id, error_kind=error_kind_for_http_status(exc.code or 500), error_message=str(exc)[:500]
            )
        return _from_response(custom_id, response.model_dump(mode="json", by_alias=True, exclude_none=True))

    def _embed_now(self, custom_id: str, prompt: Prompt, options: RequestOptions) -> Result:
        """One text's embedding through the model's ``:predict`` (the SDK's ``embed_content``)."""
        from google.genai import errors

        config = {"output_dimensionality": options.dimensions} if options.dimensions else None
        try:
            response = self.client.models.embed_content(model=options.model, contents=prompt.user, config=config)
        except errors.APIError as exc:
            return Result(
                custom_id, error_kind=error_kind_for_http_status(exc.code or 500), error_message=str(exc)[:500]
            )
        first = (response.embeddings or [None])[0]
        return _from_embedding(custom_id, {"embeddings": first.model_dump() if first else {}})


def _from_embedding(custom_id: str, prediction: dict[str, Any]) -> Result:
    """A text-embedding prediction ``{"embeddings": {"values", "statistics": {"token_count"}}}``,
    as sent; the validator judges the vector."""
    embedding = prediction.get("embeddings") or {}
    statistics = embedding.get("statistics") or {}
    tokens = int(statistics.get("token_count") or statistics.get("tokenCount") or 0)
    if embedding.get("values") is None:
        return Result(custom_id, output_text="", input_tokens=tokens)
    return Result(custom_id, vector=embedding["values"], input_tokens=tokens)


def _from_response(custom_id: str, response: dict[str, Any]) -> Result:
    usage = response.get("usageMetadata") or response.get("usage_metadata") or {}
    tokens = {
        "input_tokens": int(usage.get("promptTokenCount") or usage.get("prompt_token_count") or 0),
        "output_tokens": int(usage.get("candidatesTokenCount") or usage.get("candidates_token_count") or 0),
        "request_id": response.get("responseId") or response.get("response_id"),
    }
    candidates = response.get("candidates") or []
    if not candidates:
        return Result(custom_id, refusal="no candidates (prompt blocked)", **tokens)
    candidate = candidates[0]
    reason = candidate.get("finishReason") or candidate.get("finish_reason")
    if reason in _REFUSALS:
        return Result(custom_id, refusal=f"finish reason {reason}", **tokens)
    parts = (candidate.get("content") or {}).get("parts") or []
    return Result(
        custom_id, output_text="".join(str(p.get("text", "")) for p in parts if not p.get("thought")), **tokens
    )
