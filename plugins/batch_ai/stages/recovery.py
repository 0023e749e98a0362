"""Crash recovery across runs (in the first ``plan`` task): every run first takes over what earlier
runs left unfinished.

A worker, the scheduler or the triggerer can die at any line. What a dead run leaves behind is
always one of these, and the next run of the workload finishes it before planning anything new:

- a job **planned** (its token in the ledger) whose paid call may or may not have reached the
  provider: the provider is asked for the token. Found: the job is recorded as submitted and
  this run waits for it and collects it. Not found: the job is released and its records are
  planned again. Never resubmitted blindly, however old. A job whose claim a live process
  holds (a submit in progress right now) is left to that process.
- a job **submitted** and never collected (killed during the wait or the collect): this run
  waits for it and collects it, in the job tasks it maps for its own jobs.

Records the dead run collected but did not publish are ``completed``, and this run's quality
gate and publish take them as they take their own. What was adopted, from which run, goes in
the run's report.
"""

from __future__ import annotations

import logging
from typing import Any

from batch_ai.ledger.states import JobState, State
from batch_ai.ledger.store import Ledger
from batch_ai.providers import BatchProvider
from batch_ai.providers.base import JobExpectation
from batch_ai.stages.run import ACTOR
from batch_ai.stages.submit import aware, custom_ids_for, job_workload, provider_job

log = logging.getLogger(__name__)


def adopt(workload, ledger: Ledger, adapter: BatchProvider, run) -> list[dict[str, Any]]:
    """Take over the unfinished jobs of earlier runs of this workload (and provider and model).
    Returns what was done with each, also kept as the run's ``adoption`` detail."""
    done: list[dict[str, Any]] = []
    for job in ledger.unfinished_jobs(
        workload.name, workload.spec.provider.name, workload.spec.provider.model, run.run_id
    ):
        entry = {"token": job.token, "from_run": job.adopted_by or job.run_id, "records": job.record_count}
        if job.status == JobState.PLANNED:
            entry.update(_reconcile(job_workload(workload, job), ledger, adapter, job, run))
        else:  # submitted, or split with smaller jobs still open: wait for it and collect it here
            ledger.adopt(job.id, run.run_id)
            entry.update(
                action="adopted",
                provider_job_id=job.provider_job_id,
                why=f"{job.status} by a run that did not finish it",
            )
        if entry["action"] != "skipped":
            log.warning(
                "recovery: %s job %s of run %s (%d records): %s",
                entry["action"],
                job.token,
                entry["from_run"],
                job.record_count,
                entry["why"],
            )
        done.append(entry)
    if done:
        ledger.set_run_detail(workload.name, run.run_id, "adoption", done)
    return done


def _reconcile(workload, ledger: Ledger, adapter: BatchProvider, job, run) -> dict[str, Any]:
    """A planned job of another run: ask the provider for its token, under the job's claim."""
    with ledger.claim_job(job.token, wait=False) as held:
        if not held:
            return {"action": "skipped", "why": "a live process is submitting it now"}
        job = ledger.job(job.token)  # as it is now that nobody else can move it
        if job.status != JobState.PLANNED:
            ledger.adopt(job.id, run.run_id)
            return {
                "action": "adopted",
                "provider_job_id": job.provider_job_id,
                "why": f"{job.status} by a run that did not finish it",
            }
        records = ledger.job_attempts(job.id, State.QUEUED)
        expected = JobExpectation(
            tuple(custom_ids_for(job, records).values()),
            aware(job.created_at),
            frozenset(ledger.provider_job_ids(workload.spec.provider.name)),
        )
        found = adapter.find_job(job.token, expected) if records else None
        if found is None:
            freed = ledger.release_job(
                job.id,
                run.run_id,
                "the provider has no job with this token: planned, never submitted, by a run that did not finish",
            )
            return {
                "action": "released",
                "why": f"the provider never received it; its {freed} record(s) are planned again",
            }
        ledger.mark_submitted(
            job.id,
            found.provider_job_id,
            found.details,
            run.run_id,
            ACTOR,
            reason=f"in provider job {found.provider_job_id}, created before a crash and found by its token",
        )
        ledger.adopt(job.id, run.run_id)
        return {
            "action": "adopted",
            "provider_job_id": found.provider_job_id,
            "why": "the provider had accepted it, and the run died before the ledger heard of it",
        }


def open_work(workload, ledger: Ledger, adapter: BatchProvider, run_id: str) -> dict[str, Any]:
    """What of the workload is still ``queued`` or ``submitted`` after a run, and whether that is
    as it should be: in a job still running at the provider (named), held back on purpose, or
    owned by a live job of another run; anything else is **stranded**, and the run is not green."""
    running, held, elsewhere, stranded = [], 0, [], []
    for row in ledger.open_work(workload.name):
        if row.job_id is None:
            held += row.records  # queued, in no job: below a minimum or over a record limit
            continue
        what = {"token": row.token, "provider_job_id": row.provider_job_id, "records": row.records, "state": row.state}
        if row.status == JobState.SUBMITTED and row.provider_job_id:
            info = provider_job(adapter, ledger.job(row.token))
            if not info.terminal:
                running.append({**what, "status": info.raw_status})
                continue
        if row.run_id != run_id and row.adopted_by != run_id and row.status in (JobState.PLANNED, JobState.SUBMITTED):
            elsewhere.append({**what, "run_id": row.adopted_by or row.run_id, "status": row.status})
            continue
        stranded.append({**what, "status": row.status})
    return {"running": running, "held": held, "other_runs": elsewhere, "stranded": stranded}
