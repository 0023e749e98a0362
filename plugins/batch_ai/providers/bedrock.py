"""Amazon Bedrock batch inference adapter, on boto3 through the Amazon provider's hooks.

``BedrockHook``/``BedrockRuntimeHook`` and ``S3Hook`` take credentials, region and endpoints
from the Airflow AWS connection (``service_config`` may point each service elsewhere). Records
use Claude's InvokeModel body with a forced tool for structured output. The job name and
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
from collections.abc import Iterator, Sequence
from typing import Any

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
    split_jsonl,
    to_jsonl,
)

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


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class BedrockBatchProvider(BatchProvider):
    name = "bedrock"

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

    @property
    def staging(self) -> str:
        uri = self.staging_uri or self.conn_extra.get("batch_ai_staging_uri")
        if not uri or not uri.startswith("s3://"):
            raise ValueError(
                f"Bedrock batch jobs read and write S3: set provider.staging_uri (s3://bucket/prefix) in the "
                f"workload or the extra batch_ai_staging_uri on the {self.conn_id!r} connection"
            )
        return uri.rstrip("/")

    @property
    def service_role(self) -> str:
        role = self.role_arn or self.conn_extra.get("batch_ai_role_arn")
        if not role:
            raise ValueError(
                f"Bedrock batch jobs run as a service role: set provider.role_arn in the workload or the extra "
                f"batch_ai_role_arn on the {self.conn_id!r} connection"
            )
        return role

    # -- requests --------------------------------------------------------------------------

    def _body(self, prompt: Prompt, options: RequestOptions) -> dict[str, Any]:
        """Claude's InvokeModel body: the Messages parameters, the model named by the job instead."""
        body = claude_params(prompt, options, self.unsupported_keywords)
        del body["model"]
        return {"anthropic_version": ANTHROPIC_VERSION, **body, "temperature": options.temperature}

    def build_request(self, custom_id: str, prompt: Prompt, options: RequestOptions) -> dict[str, Any]:
        return {"recordId": custom_id, "modelInput": self._body(prompt, options)}

    # -- jobs ------------------------------------------------------------------------------

    def submit(self, requests: Sequence[dict[str, Any]], token: str, *, model: str, labels: dict[str, str]) -> JobInfo:
        data = to_jsonl(requests)
        prefix = f"{self.staging}/{token}"
        bucket, key = split_s3(f"{prefix}/input.jsonl")
        self.s3.load_bytes(data, key=key, bucket_name=bucket, replace=True)
        log.info("staged %d records (%d bytes) at %s/input.jsonl", len(requests), len(data), prefix)
        arn = self.bedrock.create_model_invocation_job(
            jobName=token,
            clientRequestToken=token,  # Bedrock's own idempotency key: a repeated create returns this job
            roleArn=self.service_role,
            modelId=model,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": f"{prefix}/input.jsonl", "s3InputFormat": "JSONL"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"{prefix}/output/"}},
            timeoutDurationInHours=24,
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

    def cleanup(self, job: JobInfo) -> None:
        source = job.details.get("input_uri")
        if not source:
            return
        bucket, key = split_s3(source.rsplit("/", 1)[0] + "/")
        keys = self.s3.list_keys(bucket_name=bucket, prefix=key)
        if keys:
            self.s3.delete_objects(bucket=bucket, keys=keys)
        log.info("deleted %d staged object(s) under s3://%s/%s", len(keys), bucket, key)

    @staticmethod
    def _info(job: dict[str, Any]) -> JobInfo:
        counts = {k.removesuffix("RecordCount"): job[k] for k in
                  ("totalRecordCount", "processedRecordCount", "successRecordCount", "errorRecordCount") if k in job}
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
        bucket, prefix = split_s3(f"{output}/{job_id}/")
        client = self.s3.get_conn()
        for key in sorted(k for k in self.s3.list_keys(bucket_name=bucket, prefix=prefix) or [] if k.endswith(".jsonl.out")):
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            for number, line in enumerate(split_jsonl(body.iter_chunks(1 << 20)), start=1):  # streamed
                yield self._parse_record(line, f"s3://{bucket}/{key}", number)

    @staticmethod
    def _parse_record(line: bytes, where: str, number: int) -> Result:
        try:
            record = json.loads(line)
            custom_id = record["recordId"]
        except (ValueError, KeyError, TypeError) as exc:
            return Result.unreadable(where, number, f"not a batch output record ({exc})")
        if record.get("error"):
            err = record["error"]
            code = err.get("errorCode")
            kind = error_kind_for_http_status(int(code)) if str(code).isdigit() else ErrorKind.UNKNOWN
            return Result(custom_id, error_kind=kind, error_message=f"{code}: {err.get('errorMessage')}")
        return claude_result(custom_id, record.get("modelOutput") or {})

    def realtime(self, custom_id: str, prompt: Prompt, options: RequestOptions) -> Result:
        from botocore.exceptions import ClientError

        try:
            response = self.runtime.invoke_model(
                modelId=options.model, body=json.dumps(self._body(prompt, options)), contentType="application/json"
            )
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
            return Result(custom_id, error_kind=error_kind_for_http_status(status), error_message=str(exc)[:500])
        return claude_result(custom_id, json.loads(response["body"].read()))
