"""Anthropic Message Batches adapter, on the official ``anthropic`` SDK.

The client comes from the Airflow Anthropic connection (``AnthropicHook``: API key in the
password, base URL in the host). Structured output is a forced tool whose input schema is the
workload's output schema. A batch carries no metadata, so a batch created just before a crash
is found again by listing recent batches and matching request count, creation time and, once
it has ended, the exact custom ids (see :meth:`AnthropicBatchProvider.find_job`).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from batch_ai import jsonio
from batch_ai.errors import AmbiguousJob
from batch_ai.providers.base import (
    BatchProvider,
    ErrorKind,
    JobExpectation,
    JobInfo,
    JobRefused,
    JobStatus,
    Prompt,
    RequestOptions,
    Result,
    error_kind_for_http_status,
    split_jsonl,
    strip_keywords,
)
from batch_ai.providers.request_file import RequestFile

log = logging.getLogger(__name__)

_ERROR_TYPES = {
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "overloaded_error": ErrorKind.SERVER_ERROR,
    "api_error": ErrorKind.SERVER_ERROR,
    "invalid_request_error": ErrorKind.BAD_REQUEST,
}
#: Clock skew allowed between our intent timestamp and the provider's created_at.
SKEW = timedelta(minutes=2)


def claude_params(prompt: Prompt, options: RequestOptions, unsupported: frozenset[str]) -> dict[str, Any]:
    """Claude Messages parameters with a forced tool carrying the output schema (Anthropic's API
    and Claude on Bedrock take the same body). No sampling parameters: the current Messages API
    no longer takes temperature."""
    tool = re.sub(r"[^a-zA-Z0-9_-]", "_", f"record_{options.schema_name}")[:64]
    return {
        "model": options.model,
        "max_tokens": options.max_output_tokens,
        "system": prompt.system,
        "messages": [{"role": "user", "content": prompt.user}],
        "tools": [
            {
                "name": tool,
                "description": "Record the answer. Its input is the whole answer, following this schema.",
                "input_schema": strip_keywords(options.output_schema, unsupported),
            }
        ],
        "tool_choice": {"type": "tool", "name": tool},
    }


def claude_result(custom_id: str, message: dict[str, Any]) -> Result:
    """A Claude message (as JSON) as a :class:`Result`: the forced tool's input is the answer."""
    usage = message.get("usage") or {}
    tokens = {"input_tokens": usage.get("input_tokens") or 0, "output_tokens": usage.get("output_tokens") or 0}
    tokens["request_id"] = message.get("id")  # the message id
    content = message.get("content") or []
    if message.get("stop_reason") == "refusal":
        return Result(custom_id, refusal="".join(b.get("text", "") for b in content) or "refused", **tokens)
    for block in content:
        if block.get("type") == "tool_use":
            return Result(custom_id, output_text=json.dumps(block.get("input"), ensure_ascii=False), **tokens)
    # no tool call (a cut-off answer): hand the text on, validation says what is wrong with it
    return Result(custom_id, output_text="".join(b.get("text", "") for b in content), **tokens)


class AnthropicBatchProvider(BatchProvider):
    name = "anthropic"

    @functools.cached_property
    def hook(self):
        from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

        return AnthropicHook(conn_id=self.conn_id)

    @functools.cached_property
    def client(self):
        return self.hook.get_conn()

    def classify(self, exc: BaseException) -> ErrorKind | None:
        import anthropic

        if isinstance(exc, anthropic.APIConnectionError):  # timeouts too
            return ErrorKind.UNAVAILABLE
        if isinstance(exc, anthropic.APIStatusError):
            return error_kind_for_http_status(exc.status_code)
        return super().classify(exc)

    def _params(self, prompt: Prompt, options: RequestOptions) -> dict[str, Any]:
        return claude_params(prompt, options, self.unsupported_keywords)

    def build_request(self, custom_id: str, prompt: Prompt, options: RequestOptions) -> dict[str, Any]:
        return {"custom_id": custom_id, "params": self._params(prompt, options)}

    def submit(
        self, requests: RequestFile, token: str, *, model: str, labels: dict[str, str], dimensions: int | None = None
    ) -> JobInfo:
        """Message Batches take the requests in the create call's body: the SDK is given them as a
        list (bounded by the job: at most 100,000 requests, 256 MB)."""
        import anthropic

        try:
            batch = self.client.messages.batches.create(requests=list(requests))
        except anthropic.BadRequestError as exc:  # the batch was validated when created, and refused
            body = exc.body if isinstance(exc.body, dict) else {}
            error = body.get("error") if isinstance(body.get("error"), dict) else {}
            raise JobRefused(f"{error.get('type', 'invalid_request_error')}: {error.get('message') or exc}") from exc
        log.info("created message batch %s for %s (%d requests)", batch.id, token, len(requests))
        return self._info(batch)

    def find_job(self, token: str, expected: JobExpectation | None = None) -> JobInfo | None:
        """The batch a crashed attempt created: same request count, created after our intent,
        not already claimed by another job in the ledger and, once ended, the same custom ids."""
        if expected is None or expected.not_before is None:
            return None
        candidates = []
        for batch in self.client.messages.batches.list(limit=100):  # newest first
            if batch.created_at < expected.not_before - SKEW:
                break
            if batch.id in expected.claimed:
                continue
            counts = batch.request_counts
            total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
            if total != len(expected.custom_ids):
                continue
            if batch.processing_status == "ended":
                ids = {r.custom_id for r in self.client.messages.batches.results(batch.id)}
                if ids != set(expected.custom_ids):
                    continue
            candidates.append(batch)
        if len(candidates) > 1:
            raise AmbiguousJob(
                f"{len(candidates)} recent Anthropic batches ({', '.join(b.id for b in candidates)}) could be the one "
                f"created for {token} before the ledger recorded it; wait until they end (their custom ids then "
                f"tell which is ours) or cancel the wrong ones, then retry the task"
            )
        return self._info(candidates[0]) if candidates else None

    def get_job(self, provider_job_id: str) -> JobInfo:
        return self._info(self.client.messages.batches.retrieve(provider_job_id))

    async def aget_job(self, provider_job_id: str) -> JobInfo:
        client = await self.hook.get_async_conn()
        async with client:
            return self._info(await client.messages.batches.retrieve(provider_job_id))

    def cancel(self, provider_job_id: str) -> None:
        self.client.messages.batches.cancel(provider_job_id)

    def staged_files(self, job: JobInfo) -> list[tuple[str, int | None]]:
        """The batch itself, while it exists: it holds the results (their size is not given)."""
        import anthropic

        try:
            self.client.messages.batches.retrieve(job.provider_job_id)
        except anthropic.NotFoundError:
            return []
        return [(job.provider_job_id, None)]

    def cleanup(self, job: JobInfo) -> None:
        self.client.messages.batches.delete(job.provider_job_id)
        log.info("deleted message batch %s and its results", job.provider_job_id)

    @staticmethod
    def _info(batch) -> JobInfo:
        c = batch.request_counts
        counts = {
            "processing": c.processing,
            "succeeded": c.succeeded,
            "errored": c.errored,
            "canceled": c.canceled,
            "expired": c.expired,
        }
        if batch.processing_status != "ended":
            status = JobStatus.RUNNING
        elif batch.cancel_initiated_at is not None:
            status = JobStatus.CANCELLED
        elif c.expired:
            status = JobStatus.EXPIRED
        else:
            status = JobStatus.COMPLETED
        return JobInfo(
            provider_job_id=batch.id,
            status=status,
            raw_status=batch.processing_status,
            counts=counts,
            details={"created_at": batch.created_at.isoformat(), "results_url": batch.results_url},
        )

    def iter_results(self, job: JobInfo) -> Iterator[Result]:
        # the SDK's request (auth, results_url), read as raw lines so one unreadable line is only that
        results = self.client.messages.batches.results(job.provider_job_id)
        where = f"results of message batch {job.provider_job_id}"
        try:
            for number, line in enumerate(split_jsonl(results.http_response.iter_bytes()), start=1):
                yield self._parse_line(line, where, number).sized(line)
        finally:
            results.close()

    @staticmethod
    def _parse_line(line: bytes, where: str, number: int) -> Result:
        try:
            item = jsonio.loads(line)
            custom_id, result = item["custom_id"], item["result"]
            kind = result["type"]
        except (ValueError, KeyError, TypeError) as exc:
            return Result.unreadable(where, number, f"not a batch result line ({exc})")
        if kind == "succeeded":
            return claude_result(custom_id, result.get("message") or {})
        if kind == "errored":
            err = (result.get("error") or {}).get("error") or {}
            return Result(
                custom_id,
                error_kind=_ERROR_TYPES.get(err.get("type"), ErrorKind.UNKNOWN),
                error_message=f"{err.get('type')}: {err.get('message')}",
            )
        if kind == "canceled":
            return Result(custom_id, error_kind=ErrorKind.CANCELLED, error_message="canceled before processing")
        return Result(custom_id, error_kind=ErrorKind.EXPIRED, error_message="expired before processing")

    def realtime(self, custom_id: str, prompt: Prompt, options: RequestOptions) -> Result:
        import anthropic

        try:
            message = self.client.messages.create(**self._params(prompt, options))
        except anthropic.APIStatusError as exc:
            return Result(
                custom_id,
                error_kind=error_kind_for_http_status(exc.status_code),
                error_message=str(exc)[:500],
                request_id=exc.request_id,
            )
        return claude_result(custom_id, message.model_dump(mode="json"))
