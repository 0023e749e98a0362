"""Airflow operators for each stage; provider-specific submit/wait operators per provider."""

from __future__ import annotations


def job_operators(provider: str):
    """(submit operator class, wait sensor class) for a provider."""
    from batch_ai.operators.providers import JOB_OPERATORS

    try:
        return JOB_OPERATORS[provider]
    except KeyError:
        raise ValueError(f"no operators for provider {provider!r}; known: {sorted(JOB_OPERATORS)}") from None
