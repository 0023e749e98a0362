"""Amazon Bedrock batch inference adapter, on boto3 through the Amazon provider's hooks.

``BedrockHook``/``BedrockRuntimeHook`` and ``S3Hook`` take credentials, region and endpoints
from the Airflow AWS connection (``service_config`` may point each service elsewhere). Records
use Claude's InvokeModel body with a forced tool for structured output; embeddings
(``endpoint: embeddings``) use Titan Text Embeddings V2's body ``{inputText, dimensions,
normalize}`` and read ``{embedding, inputTextTokenCount}`` back. The job name and
``clientRequestToken`` are the submission token: Bedrock itself de-duplicates a retried create,
and a retried task finds the job by name.

Connection extras this adapter reads besides the Amazon provider's own:
``batch_ai_staging_uri`` (s3://bucket/prefix) and ``batch_ai_role_arn`` (the service role the
job runs as), each used when the workload sets none.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Iterator
from typing import Any

from batch_ai.errors import StageError
from batch_ai.providers.anthropic import claude_params, claude_result
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
)
from batch_ai.providers.request_file import RequestFile
from batch_ai.providers.staging import S3Store, StagingMixin

log = logging.getLogger(__name__)

ANTHROPIC_VERSION = "bedrock-2023-05-31"
_STATUS = {
    "Submitted": JobStatus.PENDING,
    "Validating": JobStatus.PENDING,
    "Scheduled": JobStatus.PENDING,
    "InProgress": JobStatus.RUNNING,
    "Stopping": JobStatus.RUNNING,
    # a success with some failed records (the stock Airflow sensor treats it as a failure)
    "Completed": JobStatus.COMPLETED,
    "PartiallyCompleted": JobStatus.COMPLETED,
    "Failed": JobStatus.FAILED,
    "Stopped": JobStatus.CANCELLED,
    "Expired": JobStatus.EXPIRED,
}


class BedrockBatchProvider(StagingMixin, BatchProvider):
    name = "bedrock"
    staging_needs = "Bedrock batch jobs read and write S3"

    @functools.cached_property
    def bedrock(self):
        from airflow.providers.amazon.aws.hooks.bedrock import BedrockHook

        return BedrockHook(aws_conn_id=self.conn_id, region_name=self.region).conn

    @functools.cached_property
    def runtime(self):
        from airflow.providers.amazon.aws.hooks.bedrock import BedrockRuntimeHook

        return BedrockRuntimeHook(aws_conn_id=self.conn_id, region_name=self.region).conn

    @functools.cached_property
    def s3(self):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.conn_id, region_name=self.region)

    @functools.cached_property
    def store(self) -> S3Store:
        return S3Store(self.s3)

    def classify(self, exc: BaseException) -> ErrorKind | None:
        from botocore import exceptions as boto

        if isinstance(exc, boto.ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("ThrottlingException", "TooManyRequestsException", "ServiceQuotaExceededException"):
                return ErrorKind.RATE_LIMITED
            if code in ("AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException"):
                return ErrorKind.AUTHENTICATION
            return error_kind_for_http_status(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500))
        if isinstance(exc, (boto.EndpointConnectionError, boto.ConnectTimeoutError, boto.ReadTimeoutError)):
            return ErrorKind.UNAVAILABLE
        if isinstance(exc, (boto.NoCredentialsError, boto.PartialCredentialsError)):
            return ErrorKind.AUTHENTICATION
        return super().classify(exc)

    @property
    def service_role(self) -> str:
        role = self.role_arn or self.conn_extra.get("batch_ai_role_arn")
        if not role:
            raise StageError(
                f"Bedrock batch jobs run as a service role: set provider.role_arn in the workload or the extra "
                f"batch_ai_role_arn on the {self.conn_id!r} connection"
            )
        return role

    # -- requests --------------------------------------------------------------------------

    def _body(self, prompt: Prompt, options: RequestOptions) -> dict[str, Any]:
        """Claude's InvokeModel body: the Messages parameters, the model named by the job instead;
        for embeddings, Titan's (a unit vector of the workload's length)."""
        if options.endpoint == "embeddings":
            titan: dict[str, Any] = {"inputText": prompt.user, "normalize": True}
            if options.dimensions:
                titan["dimensions"] = options.dimensions
            return titan
        body = claude_params(prompt, options, self.unsupported_keywords)
        del body["model"]
        return {"anthropic_version": ANTHROPIC_VERSION, **body, "temperature": options.temperature}

    def build_request(self, custom_id: str, prompt: Prompt, options: RequestOptions) -> dict[str, Any]:
        return {"recordId": custom_id, "modelInput": self._body(prompt, options)}

    # -- jobs ------------------------------------------------------------------------------

    def submit(
        self, requests: RequestFile, token: str, *, model: str, labels: dict[str, str], dimensions: int | None = None
    ) -> JobInfo:
        source = self.stage_input(token, requests)
        prefix = source.rsplit("/", 1)[0]
        arn = self.bedrock.create_model_invocation_job(
            jobName=token,
            clientRequestToken=token,  # Bedrock's own idempotency key: a repeated create returns this job
            roleArn=self.service_role,
            modelId=model,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": source, "s3InputFormat": "JSONL"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"{prefix}/output/"}},
            # the completion window in the capability table (24-168 h)
            timeoutDurationInHours=int(self.caps.window.hours),
            tags=[{"key": k[:128], "value": str(v)[:256]} for k, v in {"batch_ai_token": token, **labels}.items()],
        )["jobArn"]
        log.info("created model invocation job %s for %s", arn, token)
        return self.get_job(arn)

    def find_job(self, token: str, expected: JobExpectation | None = None) -> JobInfo | None:
        for page in self.bedrock.get_paginator("list_model_invocation_jobs").paginate(nameContains=token):
            for summary in page.get("invocationJobSummaries", []):
                if summary.get("jobName") == token:
                    return self._info(summary)
        return None

    def get_job(self, provider_job_id: str) -> JobInfo:
        return self._info(self.bedrock.get_model_invocation_job(jobIdentifier=provider_job_id))

    async def aget_job(self, provider_job_id: str) -> JobInfo:
        # boto3 is synchronous: run the call in a thread so the triggerer's loop never blocks
        return await asyncio.to_thread(self.get_job, provider_job_id)

    def cancel(self, provider_job_id: str) -> None:
        self.bedrock.stop_model_invocation_job(jobIdentifier=provider_job_id)

    @staticmethod
    def _info(job: dict[str, Any]) -> JobInfo:
        counts = {
            k.removesuffix("RecordCount"): job[k]
            for k in ("totalRecordCount", "processedRecordCount", "successRecordCount", "errorRecordCount")
            if k in job
        }
        status = job.get("status", "Submitted")
        return JobInfo(
            provider_job_id=job["jobArn"],
            status=_STATUS.get(status, JobStatus.RUNNING),
            raw_status=status,
            counts=counts,
            details={
                "job_name": job.get("jobName"),
                "input_uri": job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"],
                "output_uri": job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"],
            },
            error=job.get("message") if status in ("Failed", "Stopped", "Expired", "PartiallyCompleted") else None,
        )

    # -- results ---------------------------------------------------------------------------

    def iter_results(self, job: JobInfo) -> Iterator[Result]:
        output = job.details["output_uri"].rstrip("/")
        job_id = job.provider_job_id.rsplit("/", 1)[-1]
        for uri in self.store.list(f"{output}/{job_id}/", ".jsonl.out"):
            for number, line in enumerate(self.store.lines(uri), start=1):  # streamed
                yield self._parse_record(line, uri, number).sized(line)

    @staticmethod
    def _parse_record(line: bytes, where: str, number: int) -> Result:
        try:
            record = loads_result_line(line)
            custom_id = record["recordId"]
        except (ValueError, KeyError, TypeError) as exc:
            return Result.unreadable(where, number, f"not a batch output record ({exc})")
        if record.get("error"):
            err = record["error"]
            code = err.get("errorCode")
            kind = error_kind_for_http_status(int(code)) if str(code).isdigit() else ErrorKind.UNKNOWN
            return Result(custom_id, error_kind=kind, error_message=f"{code}: {err.get('errorMessage')}")
        if "inputText" in (record.get("modelInput") or {}):
            return titan_result(custom_id, record.get("modelOutput") or {})
        return claude_result(custom_id, record.get("modelOutput") or {})

    def realtime(self, custom_id: str, prompt: Prompt, options: RequestOptions) -> Result:
        from botocore.exceptions import ClientError

        try:
            response = self.runtime.invoke_model(
                modelId=options.model, body=json.dumps(self._body(prompt, options)), contentType="application/json"
            )
        except ClientError as exc:
            meta = exc.response.get("ResponseMetadata", {})
            return Result(
                custom_id,
                error_kind=error_kind_for_http_status(meta.get("HTTPStatusCode", 500)),
                error_message=str(exc)[:500],
                request_id=meta.get("RequestId"),
            )
        answer = json.loads(response["body"].read())
        read = titan_result if options.endpoint == "embeddings" else claude_result
        result = read(custom_id, answer)
        result.request_id = response.get("ResponseMetadata", {}).get("RequestId") or result.request_id
        return result


def titan_result(custom_id: str, output: dict[str, Any]) -> Result:
    """Titan Text Embeddings' answer ``{"embedding", "inputTextTokenCount"}``, as sent; the
    validator judges the vector."""
    tokens = int(output.get("inputTextTokenCount") or 0)
    if output.get("embedding") is None:
        return Result(custom_id, output_text="", input_tokens=tokens)
    return Result(custom_id, vector=output["embedding"], input_tokens=tokens)
