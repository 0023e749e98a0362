"""Thin Airflow operators over :mod:`batch_ai.stages`, one per task of a run."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, ClassVar

from airflow.sdk.exceptions import AirflowSkipException

from batch_ai.deadlines import sla_risk
from batch_ai.errors import StageError
from batch_ai.operators.base import WorkloadOperator, max_wait
from batch_ai.report import build_report, format_dry_run, format_report
from batch_ai.stages import collect, gate, intake, plan, retry, sample, submit
from batch_ai.stages.recovery import open_work
from batch_ai.stages.run import ACTOR


class ExtractOperator(WorkloadOperator):
    """Read the source for the run, account for every row, queue new work in the ledger."""

    def perform(self, context) -> dict[str, Any]:
        run = self.run_info(context)
        if run.params.dry_run:
            return intake.dry_run(self.loaded_workload, self.ledger, self.adapter, run)
        return intake.extract(self.loaded_workload, self.ledger, run)


class SampleOperator(WorkloadOperator):
    """Real-time calls on a few queued records; fails the run before any batch spend if they look wrong."""

    def perform(self, context) -> dict[str, Any]:
        return sample.sample(
            self.loaded_workload, self.ledger, self.adapter, self.run_info(context, skip_in_dry_run=True)
        )


class PlanJobsOperator(WorkloadOperator):
    """Take over earlier runs' unfinished jobs (asking the provider), then split queued records
    into provider jobs within the limits; returns one token per job to finish."""

    def __init__(self, *, round_no: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.round_no = round_no  # 0: the run's first pass; n: retry round n

    def perform(self, context) -> list[str]:
        run = self.run_info(context, skip_in_dry_run=True)
        return plan.plan(self.loaded_workload, self.ledger, self.adapter, run, self.round_no)


class _JobOperator(WorkloadOperator):
    """An operator on one provider job, named by its submission token."""

    template_fields: Sequence[str] = ("workload", "token")
    provider: ClassVar[str | None] = None  # set by the provider-specific classes

    def __init__(self, *, token: str, **kwargs):
        super().__init__(**kwargs)
        self.token = token


class BatchSubmitOperator(_JobOperator):
    """Submit one planned job; a retried or cleared task re-attaches to the job it created."""

    ui_color = "#fce8b2"

    def perform(self, context) -> str | None:
        run = self.run_info(context)
        self.check_provider()
        return submit.submit(self.loaded_workload, self.ledger, self.adapter, self.token, run)


class CollectOperator(_JobOperator):
    """Stream a finished job's results, validate every output, move every record on."""

    def perform(self, context) -> dict[str, Any]:
        return collect.collect(self.loaded_workload, self.ledger, self.adapter, self.token, self.run_info(context))


class RetryRoundOperator(WorkloadOperator):
    """Start a retry round: queue again what failed transiently (review the rest), then wait
    the round's back-off in the triggerer. Skips the round when there is nothing to retry."""

    def __init__(self, *, round_no: int, final: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.round_no = round_no
        self.final = final  # after the last round: only send what is at its cap to review

    def perform(self, context) -> dict[str, int]:
        run = self.run_info(context, skip_in_dry_run=True)
        if self.final:
            return retry.requeue_for_retry(self.loaded_workload, self.ledger, run, self.round_no, requeue=False)
        summary = retry.requeue_for_retry(self.loaded_workload, self.ledger, run, self.round_no)
        if not summary["requeued"]:
            raise AirflowSkipException(f"retry round {self.round_no}: nothing to retry ({summary})")
        delay = min(retry.backoff_seconds(self.loaded_workload, self.round_no), max_wait())
        self.log.info(
            "retry round %d: %d record(s) queued again; backing off %.0fs", self.round_no, summary["requeued"], delay
        )
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

        self.defer(
            trigger=TimeDeltaTrigger(timedelta(seconds=delay)),
            method_name="execute_complete",
            kwargs={"summary": summary},
        )

    def execute_complete(self, context, event=None, summary=None) -> dict[str, int]:
        return summary


class QualityGateOperator(WorkloadOperator):
    """The great-expectations gate: fails (and so nothing is published) if an expectation fails;
    the log names each expectation with its numbers. The records stay ready for a later publish."""

    def perform(self, context) -> dict[str, Any]:
        run = self.run_info(context, skip_in_dry_run=True)
        verdict = gate.gate(self.loaded_workload, self.ledger, run)
        if not verdict.success:
            raise StageError(f"quality gate failed, nothing published: {verdict.describe()}")
        details = self.ledger.run_details(self.workload, run.run_id)["gate"]
        return {
            "success": True,
            "checks": len(verdict.checks),
            "records_ready": details["records_ready"],
            "states": self.ledger.run_accounting(self.workload, run.run_id)["states"],
            "sample": details["sample"],
        }


class PublishOperator(WorkloadOperator):
    """Upsert completed records into the sink, atomically, and mark them published."""

    def perform(self, context) -> dict[str, Any]:
        from batch_ai.publish import publish

        run = self.run_info(context, skip_in_dry_run=True)
        gated = "gate" in self.ledger.run_details(self.workload, run.run_id)
        outcome = publish(self.loaded_workload, self.ledger, run.run_id, ACTOR, run.run_id if gated else None)
        self.ledger.set_run_detail(self.workload, run.run_id, "publish", outcome)
        return outcome


class ReportOperator(WorkloadOperator):
    """Log the run report (and keep it in the ledger); fails if any extracted row is unaccounted
    for, or if records are left queued or submitted with nothing finishing them."""

    def perform(self, context) -> dict[str, Any]:
        run = self.run_info(context)
        if run.params.dry_run:
            forecast = self.ledger.run_details(self.workload, run.run_id).get("dry_run", {})
            for line in format_dry_run(forecast).splitlines():
                self.log.info("%s", line)
            if risk := sla_risk(self.loaded_workload.spec):
                self.log.warning("%s", risk)
            return forecast
        work = open_work(self.loaded_workload, self.ledger, self.adapter, run.run_id)
        report = build_report(self.loaded_workload, self.ledger, run.run_id, work, night=run.ds)
        self.ledger.finish_run(self.workload, run.run_id, report)
        for line in format_report(report).splitlines():
            self.log.info("%s", line)
        if report["lost"] != 0:
            raise StageError(f"{report['lost']} extracted row(s) are in no state: this is a bug, see the ledger")
        if work["stranded"]:
            stuck = sum(r["records"] for r in work["stranded"])
            raise StageError(
                f"{stuck} record(s) are left queued or submitted in jobs nothing is finishing "
                f"({', '.join(r['token'] for r in work['stranded'])}): see the report; the next "
                f"run adopts what it can"
            )
        return report


class EvaluateOperator(WorkloadOperator):
    """Score each evaluation target's answers against the labels; log the table and save it,
    with a chart, beside the reports."""

    def perform(self, context) -> dict[str, Any]:
        from batch_ai.evaluation import evaluate, format_table

        run = self.run_info(context, skip_in_dry_run=True)
        result = evaluate(self.loaded_workload, self.ledger, run.run_id)
        for line in format_table(result).splitlines():
            self.log.info("%s", line)
        return result
