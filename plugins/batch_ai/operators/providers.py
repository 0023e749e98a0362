"""Provider-specific operators: the generic submit and wait, bound to one provider's adapter.

They exist so a DAG reads as what it does (``BedrockBatchSubmitOperator``) and refuses a
workload configured for another provider; all behaviour is in the generic operators and the
adapters.
"""

from __future__ import annotations

from batch_ai.operators.stages import BatchJobSensor, BatchSubmitOperator


class OpenAIBatchSubmitOperator(BatchSubmitOperator):
    """Upload the job's JSONL, create the batch with our submission token in its metadata,
    record it in the ledger; on retry, find the batch already created instead of paying twice."""

    provider = "openai"


class OpenAIBatchSensor(BatchJobSensor):
    """Wait (deferred) for an OpenAI batch to end: completed, failed, expired or cancelled."""

    provider = "openai"


class AnthropicBatchSubmitOperator(BatchSubmitOperator):
    """Create a Message Batch; on retry, reconcile with recent batches instead of creating another."""

    provider = "anthropic"


class AnthropicBatchSensor(BatchJobSensor):
    """Wait (deferred) for a Message Batch to end, including canceled and expired requests."""

    provider = "anthropic"


class VertexGeminiBatchSubmitOperator(BatchSubmitOperator):
    """Stage the JSONL in GCS and create a batch prediction job named by our submission token."""

    provider = "vertex"


class VertexGeminiBatchSensor(BatchJobSensor):
    """Wait (deferred) for a batch prediction job, ending on PARTIALLY_SUCCEEDED and EXPIRED too."""

    provider = "vertex"


class BedrockBatchSubmitOperator(BatchSubmitOperator):
    """Stage the JSONL in S3 and create a model invocation job with our token as clientRequestToken."""

    provider = "bedrock"


class BedrockBatchSensor(BatchJobSensor):
    """Wait (deferred) for a model invocation job; PartiallyCompleted is a success with some failures."""

    provider = "bedrock"


JOB_OPERATORS = {
    "openai": (OpenAIBatchSubmitOperator, OpenAIBatchSensor),
    "anthropic": (AnthropicBatchSubmitOperator, AnthropicBatchSensor),
    "vertex": (VertexGeminiBatchSubmitOperator, VertexGeminiBatchSensor),
    "bedrock": (BedrockBatchSubmitOperator, BedrockBatchSensor),
}
