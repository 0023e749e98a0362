"""Provider adapters behind one interface (:mod:`batch_ai.providers.base`)."""

from __future__ import annotations

from batch_ai.providers.base import BatchProvider


def adapter_class(provider: str) -> type[BatchProvider]:
    if provider == "openai":
        from batch_ai.providers.openai import OpenAIBatchProvider

        return OpenAIBatchProvider
    raise ValueError(f"no adapter for provider {provider!r} yet")


def get_adapter(provider: str, conn_id: str) -> BatchProvider:
    return adapter_class(provider)(conn_id)
