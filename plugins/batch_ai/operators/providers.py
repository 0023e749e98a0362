"""The provider-specific operators: the generic submit and wait, bound to one provider.

They exist so a DAG reads as what it does (``BedrockBatchSubmitOperator``) and refuses a
workload configured for another provider; all behaviour is in the generic operators and the
adapters. They are made from the provider list, one pair per provider.
"""

from __future__ import annotations

from batch_ai.operators.stages import BatchSubmitOperator
from batch_ai.operators.wait import BatchJobSensor

#: The public name stem of each provider's pair of operators, and what the pair is about.
_NAMES = {
    "openai": ("OpenAIBatch", "an OpenAI batch"),
    "anthropic": ("AnthropicBatch", "an Anthropic Message Batch"),
    "vertex": ("VertexGeminiBatch", "a Vertex AI Gemini batch prediction job"),
    "bedrock": ("BedrockBatch", "an Amazon Bedrock model invocation job"),
}


def _pair(provider: str, stem: str, what: str) -> tuple[type, type]:
    submit = type(
        f"{stem}SubmitOperator",
        (BatchSubmitOperator,),
        {
            "provider": provider,
            "__module__": __name__,
            "__doc__": f"Create {what} for a planned job, exactly once (see BatchSubmitOperator).",
        },
    )
    wait = type(
        f"{stem}Sensor",
        (BatchJobSensor,),
        {
            "provider": provider,
            "__module__": __name__,
            "__doc__": f"Wait (deferred) for {what} to end, on every terminal status (see BatchJobSensor).",
        },
    )
    return submit, wait


JOB_OPERATORS: dict[str, tuple[type, type]] = {p: _pair(p, stem, what) for p, (stem, what) in _NAMES.items()}

OpenAIBatchSubmitOperator, OpenAIBatchSensor = JOB_OPERATORS["openai"]
AnthropicBatchSubmitOperator, AnthropicBatchSensor = JOB_OPERATORS["anthropic"]
VertexGeminiBatchSubmitOperator, VertexGeminiBatchSensor = JOB_OPERATORS["vertex"]
BedrockBatchSubmitOperator, BedrockBatchSensor = JOB_OPERATORS["bedrock"]
