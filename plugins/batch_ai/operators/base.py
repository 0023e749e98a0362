"""What every batch-ai operator shares: the workload, the ledger, the adapter, the run, and the one
place where errors become Airflow's.

An error that says it is not retryable (:mod:`batch_ai.errors`) fails the task at once
(``AirflowFailException``: no retry would fix it); a provider SDK's exception is classified by
the adapter into the record retries' :class:`ErrorKind` vocabulary, and :class:`ProviderCallRetryPolicy`
decides from that kind: a rate limit waits longer, an unreachable or failing provider is retried,
anything else fails at once.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Sequence
from datetime import timedelta

from airflow.sdk import BaseOperator
from airflow.sdk.definitions.retry_policy import RetryDecision, RetryPolicy
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from batch_ai.errors import BatchAIError, ErrorKind, ProviderCallError, StageError
from batch_ai.ledger.store import Ledger
from batch_ai.providers import BatchProvider, adapter_for
from batch_ai.providers.base import classify_common
from batch_ai.stages.run import RunInfo, RunParams, run_day
from batch_ai.workloads import Workload, load_workload


def max_wait() -> float:
    """``BATCH_AI_MAX_WAIT_SECONDS`` caps polling intervals and retry back-offs: for demos and
    tests against the emulator, whose jobs end in seconds."""
    return float(os.environ.get("BATCH_AI_MAX_WAIT_SECONDS", "inf"))


class ProviderCallRetryPolicy(RetryPolicy):
    """Airflow's retry policy for tasks that call a provider: it decides from the error's kind."""

    def evaluate(self, exception, try_number, max_tries, context=None) -> RetryDecision:
        kind = getattr(exception, "kind", None)
        if kind == ErrorKind.RATE_LIMITED:
            return RetryDecision.retry(timedelta(minutes=2), "rate limited: waiting longer before the retry")
        if isinstance(exception, BatchAIError):
            if exception.retryable:
                return RetryDecision.retry(reason=f"{kind or type(exception).__name__}: worth another try")
            return RetryDecision.fail(f"{kind or type(exception).__name__} is not fixed by a retry")
        return RetryDecision.default()


def task_retries(kwargs: dict) -> dict:
    """Default retries of every task: a few, with back-off, by the policy above. The tasks are
    idempotent, so a retry is always safe: it saves a night from a transient provider error and
    from a scheduler that loses track of a task (a stale success arriving for a re-queued
    deferred task fails it); an error no retry fixes still fails at once."""
    kwargs.setdefault("retries", 2)
    kwargs.setdefault("retry_delay", timedelta(seconds=30))
    kwargs.setdefault("retry_exponential_backoff", True)
    kwargs.setdefault("retry_policy", ProviderCallRetryPolicy())
    return kwargs


class WorkloadMixin:
    """What every stage needs: the workload spec, the ledger, the adapter, the run."""

    workload: str
    target: str | None = None  # an evaluation's provider:model

    @functools.cached_property
    def loaded_workload(self) -> Workload:
        return load_workload(self.workload).with_target(self.target)

    @functools.cached_property
    def ledger(self) -> Ledger:
        return Ledger.connect()

    @functools.cached_property
    def adapter(self) -> BatchProvider:
        return adapter_for(self.loaded_workload)

    def run_info(self, context, *, skip_in_dry_run: bool = False) -> RunInfo:
        """The run and its params (a backfill's version override applies to ``self.loaded_workload`` from here on)."""
        params = RunParams.from_params(context.get("params"))
        self.loaded_workload = (
            load_workload(self.workload)
            .with_target(self.target)
            .with_versions(params.prompt_version, params.schema_version)
        )
        if skip_in_dry_run and params.dry_run:
            raise AirflowSkipException("dry run: nothing is changed or submitted")
        return RunInfo(
            # an evaluation keeps each target's run apart in the ledger
            run_id=context["run_id"] + (f"#{self.target}" if self.target else ""),
            ds=run_day(context),
            data_interval_start=context.get("data_interval_start"),
            data_interval_end=context.get("data_interval_end"),
            params=params,
        )

    def check_provider(self) -> None:
        """A provider-specific operator refuses a workload configured for another provider."""
        provider = getattr(self, "provider", None)
        if provider and self.loaded_workload.spec.provider.name != provider:
            raise StageError(
                f"{type(self).__name__} is for {provider}, but workload {self.workload} "
                f"uses {self.loaded_workload.spec.provider.name}"
            )

    @contextlib.contextmanager
    def airflow_errors(self) -> Iterator[None]:
        """Errors as Airflow takes them: not retryable, the task fails at once; a provider's own
        exception, classified by the adapter first."""
        try:
            yield
        except AirflowException:
            raise
        except BatchAIError as exc:
            if exc.retryable:
                raise
            raise AirflowFailException(str(exc)) from exc
        except Exception as exc:
            adapter = self.__dict__.get("adapter")  # only if this task made provider calls
            kind = adapter.classify(exc) if adapter is not None else classify_common(exc)
            if kind is None:
                raise
            error = ProviderCallError(kind, f"{kind}: {type(exc).__name__}: {exc}")
            if error.retryable:
                raise error from exc
            raise AirflowFailException(str(error)) from exc


class WorkloadOperator(WorkloadMixin, BaseOperator):
    """A stage of a run; subclasses say what in :meth:`perform`."""

    template_fields: Sequence[str] = ("workload",)
    ui_color = "#e8f0fe"

    def __init__(self, *, workload: str, target: str | None = None, **kwargs):
        super().__init__(**task_retries(kwargs))
        self.workload = workload
        self.target = target

    def execute(self, context):
        with self.airflow_errors():
            return self.perform(context)

    def perform(self, context):
        raise NotImplementedError
