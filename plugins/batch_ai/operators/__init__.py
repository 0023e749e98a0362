"""Airflow operators for each stage; provider-specific submit/wait operators per provider."""

from __future__ import annotations


def job_operators(provider: str):
    """(submit operator class, wait sensor class) for a provider."""
    if provider == "openai":
        from batch_ai.operators.openai import OpenAIBatchSensor, OpenAIBatchSubmitOperator

        return OpenAIBatchSubmitOperator, OpenAIBatchSensor
    raise ValueError(f"no operators for provider {provider!r} yet")
