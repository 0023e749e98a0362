"""Provider adapters behind one interface (:mod:`batch_ai.providers.base`)."""

from __future__ import annotations

import importlib

from batch_ai.providers.base import BatchProvider

_ADAPTERS = {
    "openai": "batch_ai.providers.openai.OpenAIBatchProvider",
    "anthropic": "batch_ai.providers.anthropic.AnthropicBatchProvider",
    "vertex": "batch_ai.providers.vertex.VertexBatchProvider",
    "bedrock": "batch_ai.providers.bedrock.BedrockBatchProvider",
}
PROVIDERS = tuple(_ADAPTERS)


def adapter_class(provider: str) -> type[BatchProvider]:
    try:
        module, _, name = _ADAPTERS[provider].rpartition(".")
    except KeyError:
        raise ValueError(f"no adapter for provider {provider!r}; known: {sorted(_ADAPTERS)}") from None
    return getattr(importlib.import_module(module), name)


def get_adapter(provider: str, conn_id: str, **options) -> BatchProvider:
    return adapter_class(provider)(conn_id, **options)


def adapter_for(workload) -> BatchProvider:
    """The adapter a workload's provider settings name."""
    p = workload.spec.provider
    return get_adapter(p.name, workload.conn_id, region=p.region, staging_uri=p.staging_uri, role_arn=p.role_arn)
