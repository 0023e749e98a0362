"""Thin Airflow operators over :mod:`batch_ai.pipeline`, one per stage of a run."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, ClassVar

from airflow.sdk import BaseOperator, BaseSensorOperator, PokeReturnValue
from airflow.sdk.definitions.retry_policy import RetryDecision, RetryPolicy
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from batch_ai import bisect, pipeline
from batch_ai.ledger.states import JobState
from batch_ai.ledger.store import Ledger
from batch_ai.providers import BatchProvider
from batch_ai.report import build_report, format_dry_run, format_report
from batch_ai.workloads import Workload, load_workload


def max_wait() -> float:
    """``BATCH_AI_MAX_WAIT_SECONDS`` caps polling intervals and retry back-offs: for demos and
    tests against the emulator, whose jobs end in seconds."""
    return float(os.environ.get("BATCH_AI_MAX_WAIT_SECONDS", "inf"))


class ProviderCallRetryPolicy(RetryPolicy):
    """Airflow's retry policy for tasks that call a provider.

    A network failure or a server error is retried (the SDKs have retried already), a rate
    limit after a longer pause; a mistake of ours or of the configuration (a stage error, an
    illegal transition, a refused credential) fails at once instead of burning the retries.
    Exceptions are matched by class name along their hierarchy, so the policy imports no SDK
    when the DAG is parsed.
    """

    FAIL = frozenset({"StageError", "IllegalTransition", "AuthenticationError", "PermissionDeniedError",
                      "WorkloadError", "NoCredentialsError"})
    RATE_LIMITED = frozenset({"RateLimitError", "ThrottlingException", "TooManyRequests", "ResourceExhausted"})
    TRANSIENT = frozenset({"ConnectionError", "TimeoutError", "TransportError", "APIConnectionError", "APITimeoutError",
                           "InternalServerError", "EndpointConnectionError", "ServiceUnavailable"})

    def evaluate(self, exception, try_number, max_tries, context=None) -> RetryDecision:
        names = {c.__name__ for c in type(exception).__mro__}
        if names & self.FAIL:
            return RetryDecision.fail(f"{type(exception).__name__} is not fixed by a retry")
        if names & self.RATE_LIMITED:
            return RetryDecision.retry(timedelta(minutes=2), "rate limited: waiting longer before the retry")
        if names & self.TRANSIENT:
            return RetryDecision.retry(reason=f"the provider or the network failed ({type(exception).__name__})")
        return RetryDecision.default()


class WorkloadMixin:
    """What every stage needs: the workload spec, the ledger, the adapter, the run."""

    workload: str
    target: str | None = None  # an evaluation's provider:model

    @functools.cached_property
    def wl(self) -> Workload:
        return load_workload(self.workload).with_target(self.target)

    @functools.cached_property
    def ledger(self) -> Ledger:
        return Ledger.connect()

    @functools.cached_property
    def adapter(self) -> BatchProvider:
        return pipeline.adapter_for(self.wl)

    def run_info(self, context, *, skip_in_dry_run: bool = False) -> pipeline.RunInfo:
        """The run and its params (a backfill's version override applies to ``self.wl`` from here on)."""
        try:
            params = pipeline.RunParams.from_params(context.get("params"))
            self.wl = load_workload(self.workload).with_target(self.target).with_versions(params.prompt_version,
                                                                                           params.schema_version)
        except (pipeline.StageError, ValueError) as exc:
            raise AirflowException(str(exc)) from None
        if skip_in_dry_run and params.dry_run:
            raise AirflowSkipException("dry run: nothing is changed or submitted")
        return pipeline.RunInfo(
            # an evaluation keeps each target's run apart in the ledger
            run_id=context["run_id"] + (f"#{self.target}" if self.target else ""),
            ds=context["ds"],
            data_interval_start=context.get("data_interval_start"),
            data_interval_end=context.get("data_interval_end"),
            params=params,
        )


class WorkloadOperator(WorkloadMixin, BaseOperator):
    template_fields: Sequence[str] = ("workload",)
    ui_color = "#e8f0fe"

    def __init__(self, *, workload: str, target: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.workload = workload
        self.target = target


class ExtractOperator(WorkloadOperator):
    """Read the source for the run, account for every row, queue new work in the ledger."""

    def execute(self, context) -> dict[str, Any]:
        run = self.run_info(context)
        try:
            if run.params.dry_run:
                return pipeline.dry_run(self.wl, self.ledger, self.adapter, run)
            return pipeline.extract(self.wl, self.ledger, run)
        except pipeline.StageError as exc:
            raise AirflowException(str(exc)) from None


class SampleOperator(WorkloadOperator):
    """Real-time calls on a few queued records; fails the run before any batch spend if they look wrong."""

    def execute(self, context) -> dict[str, Any]:
        try:
            run = self.run_info(context, skip_in_dry_run=True)
            return pipeline.sample(self.wl, self.ledger, self.adapter, run)
        except pipeline.StageError as exc:
            raise AirflowException(str(exc)) from None


class PlanJobsOperator(WorkloadOperator):
    """Take over earlier runs' unfinished jobs (asking the provider), then split queued records
    into provider jobs within the limits; returns one token per job to finish."""

    def __init__(self, *, round_no: int = 0, **kwargs):
        kwargs.setdefault("retries", 2)
        kwargs.setdefault("retry_delay", timedelta(seconds=30))
        kwargs.setdefault("retry_exponential_backoff", True)
        kwargs.setdefault("retry_policy", ProviderCallRetryPolicy())
        super().__init__(**kwargs)
        self.round_no = round_no  # 0: the run's first pass; n: retry round n

    def execute(self, context) -> list[str]:
        run = self.run_info(context, skip_in_dry_run=True)
        return pipeline.plan(self.wl, self.ledger, self.adapter, run, self.round_no)


class _JobOperatorMixin:
    """Operators that act on one provider job, named by its submission token."""

    provider: ClassVar[str | None] = None  # set by the provider-specific subclasses

    def _check_provider(self) -> None:
        if self.provider and self.wl.spec.provider.name != self.provider:
            raise AirflowException(
                f"{type(self).__name__} is for {self.provider}, but workload {self.workload} "
                f"uses {self.wl.spec.provider.name}"
            )


class BatchSubmitOperator(_JobOperatorMixin, WorkloadOperator):
    """Submit one planned job; a retried or cleared task re-attaches to the job it created."""

    template_fields: Sequence[str] = ("workload", "token")
    ui_color = "#fce8b2"

    def __init__(self, *, token: str, **kwargs):
        kwargs.setdefault("retries", 2)
        kwargs.setdefault("retry_delay", timedelta(seconds=30))
        kwargs.setdefault("retry_exponential_backoff", True)
        kwargs.setdefault("retry_policy", ProviderCallRetryPolicy())
        super().__init__(**kwargs)
        self.token = token

    def execute(self, context) -> str | None:
        run = self.run_info(context)
        self._check_provider()
        return pipeline.submit(self.wl, self.ledger, self.adapter, self.token, run)


class BatchJobSensor(_JobOperatorMixin, WorkloadMixin, BaseSensorOperator):
    """Wait for a job to end, deferred to the triggerer by default; returns the job's final status.

    Every terminal status ends the wait (partial results are collected next). A job the provider
    refuses as a whole is halved here until the request it refuses is found (:mod:`batch_ai.bisect`),
    waiting in the triggerer between rounds. A job still running when the wait's time is up is
    left for the next run, which adopts it (or, with ``deadline.on_miss: realtime``, answered by
    real-time calls); only a wait that cannot tell (repeated poll failures) fails the task.
    """

    template_fields: Sequence[str] = ("workload", "token")
    ui_color = "#d2e3fc"

    def __init__(self, *, workload: str, token: str, deferrable: bool = True, target: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.workload = workload
        self.target = target
        self.token = token
        self.deferrable = deferrable

    def _advance(self, context):
        """The job (tree) moved forward; a job still running at the provider, or None when all ended."""
        job = self.ledger.job(self.token)
        if not job.provider_job_id and job.status != JobState.SPLIT:
            raise AirflowSkipException(f"job {self.token} was not submitted (nothing to wait for)")
        return bisect.advance(self.wl, self.ledger, self.adapter, self.token, self.run_info(context))

    def poke(self, context) -> PokeReturnValue:
        running = self._advance(context)
        if running is not None:
            self.log.info("job %s: %s %s", running.provider_job_id, running.raw_status, running.counts)
        return PokeReturnValue(is_done=running is None, xcom_value=self._summary() if running is None else None)

    def _summary(self, **more) -> dict[str, Any]:
        """The wait's result: the job as the provider ended it (or as halved, when it was refused)."""
        job = self.ledger.job(self.token)
        jobs = len(self.ledger.job_tree(job.id))
        if job.status == JobState.SPLIT:
            return {"provider_job_id": job.provider_job_id, "status": "split", "raw_status": "refused as a whole, halved",
                    "counts": None, "error": (job.details or {}).get("refused"), "jobs": jobs, **more}
        return {**pipeline.provider_job(self.adapter, job).as_event(), "jobs": jobs, **more}

    def _due(self, context):
        """The deadline, when missing it sends the job's records through real-time calls."""
        d = self.wl.spec.deadline
        if d is None or d.on_miss != "realtime":
            return None
        dag_run = context.get("dag_run")
        return pipeline.deadline_at(self.wl, self.ledger, self.run_info(context), getattr(dag_run, "queued_at", None))

    def _wait_until(self, context):
        """When this wait gives up on the job: the wait timeout after it was submitted, or the
        deadline (with ``on_miss: realtime``), whichever is sooner. A wall-clock time, so a wait
        resumed elsewhere (another triggerer, a retried task) does not start its clock again."""
        job = self.ledger.job(self.token)
        submitted = pipeline.aware(job.submitted_at or job.created_at)
        until = submitted + timedelta(hours=self.wl.spec.provider.wait_timeout_hours)
        due = self._due(context)
        return (min(until, due), True) if due is not None and due < until else (until, False)

    def _out_of_time(self, context, deadline: bool) -> dict[str, Any]:
        run = self.run_info(context)
        if deadline:
            due = self._due(context)
            summary = None
            for job in self.ledger.job_tree(self.ledger.job(self.token).id):
                if job.status == JobState.SUBMITTED and not job.provider_job_id.startswith((pipeline.REFUSED, pipeline.REALTIME)):
                    summary = pipeline.deadline_fallback(self.wl, self.ledger, self.adapter, job.token, run, due)
            return self._ended(self._summary(deadline_fallback=summary, raw_status="deadline missed: answered in real time"))
        self.log.warning("job %s: still running after %.0f h; left for the next run, which adopts it and collects it",
                         self.token, self.wl.spec.provider.wait_timeout_hours)
        return self._ended(self._summary(still_running=True))

    def execute(self, context) -> Any:
        self._check_provider()
        if not self.deferrable:
            return super().execute(context)
        running = self._advance(context)
        if running is None:
            return self._ended(self._summary())
        until, is_deadline = self._wait_until(context)
        if pipeline.utcnow() >= until:
            return self._out_of_time(context, is_deadline)
        p = self.wl.spec.provider
        from batch_ai.triggers.batch import BatchJobTrigger

        cap = max_wait()
        self.defer(
            trigger=BatchJobTrigger(
                provider=p.name,
                conn_id=self.wl.conn_id,
                provider_job_id=running.provider_job_id,
                options=self.adapter.options,
                poll_interval=min(p.poll_interval_seconds, cap),
                max_poll_interval=min(p.max_poll_interval_seconds, cap),
                timeout=(until - pipeline.utcnow()).total_seconds(),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("timed_out"):
            return self._out_of_time(context, self._wait_until(context)[1])
        if event.get("outcome") == "error":
            raise AirflowException(f"waiting for job {self.token} ({event.get('provider_job_id')}): {event['message']}")
        return self.execute(context)  # that job ended: the rest of the tree, or the end

    def _ended(self, event: dict[str, Any]) -> dict[str, Any]:
        self.log.info("job %s ended %s (%s) %s", event["provider_job_id"], event["status"], event["raw_status"], event.get("counts"))
        if event.get("error"):
            self.log.warning("job %s reports: %s", event["provider_job_id"], event["error"])
        return event


class RetryRoundOperator(WorkloadOperator):
    """Start a retry round: queue again what failed transiently (review the rest), then wait
    the round's back-off in the triggerer. Skips the round when there is nothing to retry."""

    def __init__(self, *, round_no: int, final: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.round_no = round_no
        self.final = final  # after the last round: only send what is at its cap to review

    def execute(self, context) -> dict[str, int]:
        run = self.run_info(context, skip_in_dry_run=True)
        if self.final:
            return pipeline.requeue_for_retry(self.wl, self.ledger, run, self.round_no, requeue=False)
        summary = pipeline.requeue_for_retry(self.wl, self.ledger, run, self.round_no)
        if not summary["requeued"]:
            raise AirflowSkipException(f"retry round {self.round_no}: nothing to retry ({summary})")
        delay = min(pipeline.backoff_seconds(self.wl, self.round_no), max_wait())
        self.log.info("retry round %d: %d record(s) queued again; backing off %.0fs", self.round_no, summary["requeued"], delay)
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=delay)), method_name="execute_complete",
                   kwargs={"summary": summary})

    def execute_complete(self, context, event=None, summary=None) -> dict[str, int]:
        return summary


class CollectOperator(WorkloadOperator):
    """Stream a finished job's results, validate every output, move every record on."""

    template_fields: Sequence[str] = ("workload", "token")

    def __init__(self, *, token: str, **kwargs):
        kwargs.setdefault("retries", 2)
        kwargs.setdefault("retry_delay", timedelta(seconds=30))
        kwargs.setdefault("retry_policy", ProviderCallRetryPolicy())
        super().__init__(**kwargs)
        self.token = token

    def execute(self, context) -> dict[str, Any]:
        run = self.run_info(context)
        return pipeline.collect(self.wl, self.ledger, self.adapter, self.token, run)


class QualityGateOperator(WorkloadOperator):
    """The great-expectations gate: fails (and so nothing is published) if an expectation fails;
    the log names each expectation with its numbers. The records stay ready for a later publish."""

    def execute(self, context) -> dict[str, Any]:
        run = self.run_info(context, skip_in_dry_run=True)
        verdict = pipeline.gate(self.wl, self.ledger, run)
        if not verdict.success:
            raise AirflowException(f"quality gate failed, nothing published: {verdict.describe()}")
        gate = self.ledger.run_details(self.workload, run.run_id)["gate"]
        return {"success": True, "checks": len(verdict.checks), "records_ready": gate["records_ready"],
                "states": self.ledger.run_accounting(self.workload, run.run_id)["states"], "sample": gate["sample"]}


class PublishOperator(WorkloadOperator):
    """Upsert completed records into the sink, atomically, and mark them published."""

    def execute(self, context) -> dict[str, Any]:
        from batch_ai.publish import publish

        run = self.run_info(context, skip_in_dry_run=True)
        checked = self.ledger.run_details(self.workload, run.run_id).get("gate", {}).get("record_ids")
        outcome = publish(self.wl, self.ledger, run.run_id, pipeline.ACTOR, checked)
        self.ledger.set_run_detail(self.workload, run.run_id, "publish", outcome)
        return outcome


class ReportOperator(WorkloadOperator):
    """Log the run report (and keep it in the ledger); fails if any extracted row is unaccounted for."""

    def execute(self, context) -> dict[str, Any]:
        run = self.run_info(context)
        if run.params.dry_run:
            forecast = self.ledger.run_details(self.workload, run.run_id).get("dry_run", {})
            for line in format_dry_run(forecast).splitlines():
                self.log.info("%s", line)
            return forecast
        from batch_ai.recovery import open_work

        work = open_work(self.wl, self.ledger, self.adapter, run.run_id)
        report = build_report(self.wl, self.ledger, run.run_id, work)
        self.ledger.finish_run(self.workload, run.run_id, report)
        for line in format_report(report).splitlines():
            self.log.info("%s", line)
        if report["lost"] != 0:
            raise AirflowException(f"{report['lost']} extracted row(s) are in no state: this is a bug, see the ledger")
        if work["stranded"]:
            stuck = sum(r["records"] for r in work["stranded"])
            raise AirflowException(f"{stuck} record(s) are left queued or submitted in jobs nothing is finishing "
                                   f"({', '.join(r['token'] for r in work['stranded'])}): see the report; the next run "
                                   f"adopts what it can")
        return report


class EvaluateOperator(WorkloadOperator):
    """Score each evaluation target's answers against the labels; log the table and save it,
    with a chart, beside the reports."""

    def execute(self, context) -> dict[str, Any]:
        from batch_ai.evaluation import evaluate, format_table

        run = self.run_info(context, skip_in_dry_run=True)
        result = evaluate(self.wl, self.ledger, run.run_id)
        for line in format_table(result).splitlines():
            self.log.info("%s", line)
        return result
