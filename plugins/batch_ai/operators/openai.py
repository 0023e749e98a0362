"""OpenAI Batch API operators: the generic ones, bound to the OpenAI adapter."""

from __future__ import annotations

from batch_ai.operators.stages import BatchJobSensor, BatchSubmitOperator


class OpenAIBatchSubmitOperator(BatchSubmitOperator):
    """Upload the job's JSONL, create the batch with our submission token in its metadata,
    record it in the ledger; on retry, find the batch already created instead of paying twice."""

    provider = "openai"


class OpenAIBatchSensor(BatchJobSensor):
    """Wait (deferred) for an OpenAI batch to end: completed, failed, expired or cancelled."""

    provider = "openai"
