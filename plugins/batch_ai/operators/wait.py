"""The ``job.wait`` task: wait for a provider job to end, deferred to the triggerer by default."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from batch_ai.errors import ErrorKind, ProviderCallError
from batch_ai.ledger.states import JobState
from batch_ai.operators.base import WorkloadMixin, max_wait, task_retries
from batch_ai.providers.base import JobInfo
from batch_ai.stages import realtime
from batch_ai.stages.submit import REALTIME, REFUSED, aware, provider_job
from batch_ai.stages.wait import advance
from batch_ai.triggers.polling import JobPoller, check_event


class BatchJobSensor(WorkloadMixin, BaseSensorOperator):
    """Wait for a job to end, deferred to the triggerer by default; returns the job's final status.

    Every terminal status ends the wait (partial results are collected next). A job the provider
    refuses as a whole is halved here until the request it refuses is found
    (:mod:`batch_ai.stages.wait`), waiting in the triggerer between rounds. A job still running when
    the wait's time is up is left for the next run, which adopts it (or, with ``deadline.on_miss:
    realtime``, answered by real-time calls); only a wait that cannot tell (repeated poll
    failures) fails the task.
    """

    template_fields: Sequence[str] = ("workload", "token")
    ui_color = "#d2e3fc"
    provider: ClassVar[str | None] = None  # set by the provider-specific classes

    def __init__(self, *, workload: str, token: str, deferrable: bool = True, target: str | None = None, **kwargs):
        super().__init__(**task_retries(kwargs))
        self.workload = workload
        self.target = target
        self.token = token
        self.deferrable = deferrable
        self._poller: JobPoller | None = None

    def _advance(self, context) -> JobInfo | None:
        """The job (tree) moved forward; a job still running at the provider, or None when all ended."""
        job = self.ledger.job(self.token)
        if not job.provider_job_id and job.status != JobState.SPLIT:
            raise AirflowSkipException(f"job {self.token} was not submitted (nothing to wait for)")
        return advance(self.loaded_workload, self.ledger, self.adapter, self.token, self.run_info(context))

    def poke(self, context) -> PokeReturnValue:
        with self.airflow_errors():
            until, is_deadline = self._wait_until(context)
            self._poller = self._poller or JobPoller(self.token, until)
            try:
                running = self._advance(context)
            except AirflowException:
                raise
            except Exception as exc:  # a poll that failed: ridden out as the trigger rides it out
                event = self._poller.on_error(exc, _now())
                if event is None:
                    self.log.warning("poll of job %s failed (%d in a row): %s", self.token, self._poller.failures, exc)
                    return PokeReturnValue(is_done=False)
                return PokeReturnValue(is_done=True, xcom_value=self._resume(context, event))
            if running is None:
                return PokeReturnValue(is_done=True, xcom_value=self._ended(self._summary()))
            if _now() >= until:
                return PokeReturnValue(is_done=True, xcom_value=self._out_of_time(context, is_deadline))
            self.log.info("job %s: %s %s", running.provider_job_id, running.raw_status, running.counts)
            return PokeReturnValue(is_done=False)

    def _summary(self, **more) -> dict[str, Any]:
        """The wait's result: the job as the provider ended it (or as halved, when it was refused)."""
        job = self.ledger.job(self.token)
        jobs = len(self.ledger.job_tree(job.id))
        if job.status == JobState.SPLIT:
            return {
                "provider_job_id": job.provider_job_id,
                "status": "split",
                "raw_status": "refused as a whole, halved",
                "counts": None,
                "error": (job.details or {}).get("refused"),
                "jobs": jobs,
                **more,
            }
        return {**provider_job(self.adapter, job).as_event(), "jobs": jobs, **more}

    def _due(self, context):
        """The deadline, when missing it sends the job's records through real-time calls."""
        d = self.loaded_workload.spec.deadline
        if d is None or d.on_miss != "realtime":
            return None
        dag_run = context.get("dag_run")
        return realtime.deadline_at(
            self.loaded_workload, self.ledger, self.run_info(context), getattr(dag_run, "queued_at", None)
        )

    def _wait_until(self, context) -> tuple[datetime, bool]:
        """When this wait gives up on the job: the wait timeout after it was submitted, or the
        deadline (with ``on_miss: realtime``), whichever is sooner; and whether it is the deadline.
        A wall-clock time, so a wait resumed elsewhere does not start its clock again."""
        job = self.ledger.job(self.token)
        until = aware(job.submitted_at or job.created_at) + timedelta(
            hours=self.loaded_workload.spec.provider.wait_timeout_hours
        )
        due = self._due(context)
        return (due, True) if due is not None and due < until else (until, False)

    def _out_of_time(self, context, deadline: bool) -> dict[str, Any]:
        run = self.run_info(context)
        if deadline:
            due, summary = self._due(context), None
            for job in self.ledger.job_tree(self.ledger.job(self.token).id):
                if job.status == JobState.SUBMITTED and not job.provider_job_id.startswith((REFUSED, REALTIME)):
                    summary = realtime.deadline_fallback(
                        self.loaded_workload, self.ledger, self.adapter, job.token, run, due
                    )
            return self._ended(
                self._summary(deadline_fallback=summary, raw_status="deadline missed: answered in real time")
            )
        self.log.warning(
            "job %s: still running after %.0f h; left for the next run, which adopts it and collects it",
            self.token,
            self.loaded_workload.spec.provider.wait_timeout_hours,
        )
        return self._ended(self._summary(still_running=True))

    def execute(self, context) -> Any:
        with self.airflow_errors():
            self.check_provider()
        if not self.deferrable:
            return super().execute(context)
        with self.airflow_errors():
            running = self._advance(context)
            if running is None:
                return self._ended(self._summary())
            until, is_deadline = self._wait_until(context)
            if _now() >= until:
                return self._out_of_time(context, is_deadline)
        self._defer(running, until)

    def _defer(self, running: JobInfo, until: datetime) -> None:
        from batch_ai.triggers.batch import BatchJobTrigger

        p, cap = self.loaded_workload.spec.provider, max_wait()
        self.defer(
            trigger=BatchJobTrigger(
                provider=p.name,
                conn_id=self.loaded_workload.conn_id,
                provider_job_id=running.provider_job_id,
                deadline=until.isoformat(),
                options=self.adapter.options,
                poll_interval=min(p.poll_interval_seconds, cap),
                max_poll_interval=min(p.max_poll_interval_seconds, cap),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context, event: dict[str, Any]) -> dict[str, Any]:
        with self.airflow_errors():
            return self._resume(context, check_event(event))

    def _resume(self, context, event: dict[str, Any]) -> dict[str, Any]:
        if event["status"] == "timeout":
            return self._out_of_time(context, self._wait_until(context)[1])
        if event["status"] == "error":
            message = f"waiting for job {self.token} ({event['provider_job_id']}): {event['message']}"
            raise ProviderCallError(ErrorKind.UNAVAILABLE, message)  # retried: the wait picks up where it was
        return self.execute(context)  # that job ended: the rest of the tree, or the end

    def _ended(self, event: dict[str, Any]) -> dict[str, Any]:
        self.log.info(
            "job %s ended %s (%s) %s",
            event["provider_job_id"],
            event["status"],
            event["raw_status"],
            event.get("counts"),
        )
        if event.get("error"):
            self.log.warning("job %s reports: %s", event["provider_job_id"], event["error"])
        return event


def _now() -> datetime:
    return datetime.now(UTC)
