"""OpenAI Batch API adapter, on the official ``openai`` SDK.

The client comes from the Airflow OpenAI connection through the provider's ``OpenAIHook``
(API key in the password, ``base_url`` in ``extra.openai_client_kwargs`` or the host), so
pointing it at the local emulator or at a proxy is a connection change, not a code change.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator
from typing import Any

from batch_ai.providers import openai_endpoints as endpoints
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
    split_jsonl,
)
from batch_ai.providers.request_file import RequestFile

log = logging.getLogger(__name__)
_FILE_KEYS = ("input_file_id", "output_file_id", "error_file_id")

ENDPOINT = "/v1/chat/completions"
TOKEN_KEY = "batch_ai_token"
#: How far back :meth:`OpenAIBatchProvider.find_job` looks for a batch it created.
FIND_LOOKBACK_SECONDS = 7 * 24 * 3600

_STATUS = {
    "validating": JobStatus.PENDING,
    "in_progress": JobStatus.RUNNING,
    "finalizing": JobStatus.RUNNING,
    "cancelling": JobStatus.RUNNING,
    "completed": JobStatus.COMPLETED,
    "failed": JobStatus.FAILED,
    "expired": JobStatus.EXPIRED,
    "cancelled": JobStatus.CANCELLED,
}

_LINE_ERROR_CODES = {
    "batch_expired": ErrorKind.EXPIRED,
    "batch_cancelled": ErrorKind.CANCELLED,
    "rate_limit_exceeded": ErrorKind.RATE_LIMITED,
    "server_error": ErrorKind.SERVER_ERROR,
}


class OpenAIBatchProvider(BatchProvider):
    name = "openai"

    @functools.cached_property
    def hook(self):
        from airflow.providers.openai.hooks.openai import OpenAIHook

        return OpenAIHook(conn_id=self.conn_id)

    @functools.cached_property
    def client(self):
        return self.hook.get_conn()

    def classify(self, exc: BaseException) -> ErrorKind | None:
        import openai

        if isinstance(exc, openai.APIConnectionError):  # timeouts too
            return ErrorKind.UNAVAILABLE
        if isinstance(exc, openai.APIStatusError):
            return error_kind_for_http_status(exc.status_code)
        return super().classify(exc)

    # -- requests --------------------------------------------------------------------------

    def _body(self, prompt: Prompt, options: RequestOptions) -> dict[str, Any]:
        return endpoints.body(prompt, options, self.unsupported_keywords)

    def build_request(self, custom_id: str, prompt: Prompt, options: RequestOptions) -> dict[str, Any]:
        url = endpoints.URLS[options.endpoint]
        return {"custom_id": custom_id, "method": "POST", "url": url, "body": self._body(prompt, options)}

    # -- jobs ------------------------------------------------------------------------------

    def submit(
        self, requests: RequestFile, token: str, *, model: str, labels: dict[str, str], dimensions: int | None = None
    ) -> JobInfo:
        # the SDK streams a file object into the multipart body
        # a batch serves one endpoint, the one its lines name
        endpoint = next(iter(requests), {}).get("url", ENDPOINT)
        upload = self.client.files.create(file=(f"{token}.jsonl", requests.open()), purpose="batch")
        log.info("uploaded %s (%d requests, %d bytes) as file %s", token, requests.count, requests.size, upload.id)
        metadata = {TOKEN_KEY: token, **{k[:64]: str(v)[:512] for k, v in labels.items()}}
        batch = self.client.batches.create(
            input_file_id=upload.id, endpoint=endpoint, completion_window="24h", metadata=metadata
        )
        log.info("created batch %s for %s", batch.id, token)
        return self._info(batch)

    def find_job(self, token: str, expected: JobExpectation | None = None) -> JobInfo | None:
        oldest = time.time() - FIND_LOOKBACK_SECONDS
        for batch in self.client.batches.list(limit=100):  # newest first, auto-paginated
            if (batch.metadata or {}).get(TOKEN_KEY) == token:
                return self._info(batch)
            if batch.created_at < oldest:
                break
        return None

    def get_job(self, provider_job_id: str) -> JobInfo:
        return self._info(self.client.batches.retrieve(provider_job_id))

    async def aget_job(self, provider_job_id: str) -> JobInfo:
        async with await self.hook.aget_conn() as client:
            return self._info(await client.batches.retrieve(provider_job_id))

    def cancel(self, provider_job_id: str) -> None:
        self.client.batches.cancel(provider_job_id)

    def staged_files(self, job: JobInfo) -> list[tuple[str, int | None]]:
        import openai

        found = []
        for file_id in filter(None, (job.details.get(key) for key in _FILE_KEYS)):
            with contextlib.suppress(openai.NotFoundError):  # deleted already (after collect, or by hand)
                found.append((file_id, self.client.files.retrieve(file_id).bytes))
        return found

    def delete_staged(self, job: JobInfo, names: list[str]) -> None:
        for file_id in names:
            self.client.files.delete(file_id)

    def cleanup(self, job: JobInfo) -> None:
        for key in _FILE_KEYS:
            file_id = job.details.get(key)
            if file_id:
                self.client.files.delete(file_id)
                log.info(
                    "deleted %s %s of batch %s", key.removesuffix("_id").replace("_", " "), file_id, job.provider_job_id
                )

    @staticmethod
    def _info(batch) -> JobInfo:
        counts = batch.request_counts
        errors = (
            [f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "") for e in (batch.errors.data or [])]
            if batch.errors
            else []
        )
        return JobInfo(
            provider_job_id=batch.id,
            status=_STATUS.get(batch.status, JobStatus.RUNNING),
            raw_status=batch.status,
            counts={"total": counts.total, "completed": counts.completed, "failed": counts.failed} if counts else {},
            details={
                "input_file_id": batch.input_file_id,
                "output_file_id": batch.output_file_id,
                "error_file_id": batch.error_file_id,
                "created_at": batch.created_at,
            },
            error="; ".join(errors) or None,
        )

    # -- results ---------------------------------------------------------------------------

    def iter_results(self, job: JobInfo) -> Iterator[Result]:
        for key in ("output_file_id", "error_file_id"):
            file_id = job.details.get(key)
            if not file_id:
                continue
            with self.client.files.with_streaming_response.content(file_id) as response:
                for number, line in enumerate(split_jsonl(response.iter_bytes()), start=1):
                    yield self._parse_line(line, file_id, number).sized(line)

    @staticmethod
    def _parse_line(line: bytes, file_id: str, number: int) -> Result:
        try:
            item = loads_result_line(line)
            custom_id = item["custom_id"]
        except (ValueError, KeyError, TypeError) as exc:
            return Result.unreadable(f"result file {file_id}", number, f"not a batch result line ({exc})")
        result = _line_result(custom_id, item)
        result.request_id = (item.get("response") or {}).get("request_id") or item.get("id")
        return result

    # -- real time -------------------------------------------------------------------------

    def realtime(self, custom_id: str, prompt: Prompt, options: RequestOptions) -> Result:
        import openai

        create = {
            "chat": self.client.chat.completions.create,
            "responses": self.client.responses.create,
            "embeddings": self.client.embeddings.create,
        }[options.endpoint]
        try:
            answer = create(**self._body(prompt, options))
        except openai.APIStatusError as exc:  # after the SDK's own retries
            return Result(
                custom_id,
                error_kind=error_kind_for_http_status(exc.status_code),
                error_message=str(exc)[:500],
                request_id=exc.request_id,
            )
        result = endpoints.result_from(custom_id, answer.model_dump())
        result.request_id = answer._request_id or getattr(answer, "id", None)  # the x-request-id header
        return result


def _line_result(custom_id: str, item: dict[str, Any]) -> Result:
    response, error = item.get("response"), item.get("error")
    if response and response.get("status_code") == 200:
        return endpoints.result_from(custom_id, response.get("body") or {})
    if error:
        kind = _LINE_ERROR_CODES.get(error.get("code"), ErrorKind.UNKNOWN)
        return Result(custom_id, error_kind=kind, error_message=f"{error.get('code')}: {error.get('message')}")
    status = (response or {}).get("status_code", 0)
    body_error = ((response or {}).get("body") or {}).get("error") or {}
    return Result(
        custom_id,
        error_kind=error_kind_for_http_status(status),
        error_message=f"HTTP {status}: {body_error.get('message', 'no message')}",
    )
