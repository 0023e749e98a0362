"""Real-time calls in place of a batch job: below a provider's minimum job size, for halves of a
refused job too small for one, and after a missed deadline (``deadline.on_miss: realtime``),
where the batch job is cancelled and its records answered at the full price."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from batch_ai.ledger.states import JobState, State
from batch_ai.ledger.store import Ledger, utcnow
from batch_ai.providers import BatchProvider
from batch_ai.providers.base import JobInfo, JobStatus
from batch_ai.stages.collect import apply_results
from batch_ai.stages.run import ACTOR, RunInfo
from batch_ai.stages.submit import REALTIME, aware, custom_ids_for
from batch_ai.workloads import Workload

log = logging.getLogger(__name__)


class RealtimeCalls:
    """Real-time calls for a list of records, at most ``per_minute``; the first call that fails
    (after the SDK's own retries) ends the series, so the answers already paid for are kept and
    the records not reached are told apart (``failure``)."""

    def __init__(
        self,
        workload: Workload,
        adapter: BatchProvider,
        records,
        custom_ids: dict[int, str],
        per_minute: float | None = None,
    ):
        self.w, self.adapter, self.records, self.custom_ids = workload, adapter, records, custom_ids
        self.gap = 60.0 / per_minute if per_minute else 0.0
        self.failure: Exception | None = None

    def __iter__(self):
        options = self.w.request_options()
        last = None
        for rec in self.records:
            if last is not None and self.gap:
                time.sleep(max(0.0, last + self.gap - time.monotonic()))
            last = time.monotonic()
            try:
                yield self.adapter.realtime(self.custom_ids[rec.id], self.w.prompt_for(rec.input), options)
            except Exception as exc:  # noqa: BLE001 - recorded, and the rest are marked below
                self.failure = exc
                log.warning("real-time call for record %s failed, stopping here: %s", rec.id, exc)
                return


def deadline_at(workload: Workload, ledger: Ledger, run: RunInfo, queued_at: datetime | None = None) -> datetime | None:
    """When the run's results are due: ``deadline.hours`` after the DAG run was queued (as
    Airflow's deadline alert counts), or, where Airflow has no queue time (``airflow dags
    test``), after the run's extract started (in the ledger)."""
    if workload.spec.deadline is None:
        return None
    started = queued_at or ledger.run_started_at(workload.name, run.run_id) or utcnow()
    return aware(started) + timedelta(hours=workload.spec.deadline.hours)


def deadline_fallback(
    workload: Workload, ledger: Ledger, adapter: BatchProvider, token: str, run: RunInfo, due: datetime
) -> dict[str, Any]:
    """The deadline passed with the job unfinished: cancel it and answer its records through
    real-time calls (at full price, at most ``deadline.realtime_per_minute``). A result the
    cancelled job still delivers later is ignored: its record is no longer ``submitted``."""
    job = ledger.job(token)
    records = ledger.job_records(job.id, State.SUBMITTED)
    cancelled = True
    try:
        adapter.cancel(job.provider_job_id)
    except Exception as exc:  # noqa: BLE001 - the real-time answers matter more than the cancel
        cancelled = False
        log.warning("could not cancel job %s (%s): %s; its results will be ignored", token, job.provider_job_id, exc)
    per_minute = workload.spec.deadline.realtime_per_minute
    answers = RealtimeCalls(workload, adapter, records, {r.id: r.custom_id for r in records}, per_minute)
    ledger.update_job(job.id, details={**(job.details or {}), "deadline_fallback": True})
    info = JobInfo(
        job.provider_job_id, JobStatus.COMPLETED, "answered in real time after the deadline", {"total": len(records)}
    )
    before = ledger.job(token).cost_usd or 0.0
    # a record the calls did not reach becomes provider_error (missing_result), retried later
    tally = apply_results(workload, ledger, ledger.job(token), answers, info, run, discount=1.0)
    paid = (ledger.job(token).cost_usd or 0.0) - before
    ledger.finish_job(job.id, JobState.CANCELLED if cancelled else JobState.COMPLETED, {"realtime_cost_usd": paid})
    summary = {
        "deadline_at": due.isoformat(timespec="seconds"),
        "records": len(records),
        "cancelled": [job.provider_job_id] if cancelled else [],
        "realtime_cost_usd": round(paid, 6),
        **tally,
    }
    earlier = ledger.run_details(workload.name, run.run_id).get("deadline")
    if earlier:  # another job of the run missed it too
        summary = {
            **summary,
            "records": earlier["records"] + len(records),
            "cancelled": earlier["cancelled"] + summary["cancelled"],
            "realtime_cost_usd": round(earlier["realtime_cost_usd"] + paid, 6),
        }
    ledger.set_run_detail(workload.name, run.run_id, "deadline", summary)
    log.warning(
        "deadline %s missed: job %s %s; %d record(s) answered through real-time calls: %s",
        due.isoformat(),
        job.provider_job_id,
        "cancelled" if cancelled else "not cancelled",
        len(records),
        json.dumps(tally),
    )
    return summary


def run_realtime(
    workload: Workload, ledger: Ledger, adapter: BatchProvider, token: str, run: RunInfo
) -> dict[str, Any]:
    """Process a planned job's records with real-time calls instead of a batch job (at full price)."""
    job = ledger.job(token)
    records = ledger.job_records(job.id, State.QUEUED)
    custom_ids = custom_ids_for(job, records)
    ledger.mark_submitted(job.id, f"{REALTIME}{token}", {"kind": "realtime"}, run.run_id, ACTOR)
    # a call that fails ends the series; the records not reached become provider_error
    results = RealtimeCalls(workload, adapter, records, custom_ids)
    info = JobInfo(f"{REALTIME}{token}", JobStatus.COMPLETED, "realtime", {"total": len(records)})
    summary = apply_results(workload, ledger, ledger.job(token), results, info, run, discount=1.0)
    ledger.finish_job(job.id, JobState.COMPLETED, {"counts": info.counts})
    log.info("real-time %s: %s", token, json.dumps(summary))
    return summary
