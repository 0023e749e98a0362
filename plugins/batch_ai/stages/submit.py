"""The ``job.submit`` task: create the provider job for a planned token, exactly once.

The ledger holds the job's intent (its token) before the paid call, and the call is made under
the job's claim after asking the provider for the token: a retried or cleared task, or a later
run adopting the work, finds the job instead of paying for a second one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from batch_ai.ledger.states import JobState, State
from batch_ai.ledger.store import Ledger, utcnow
from batch_ai.providers import BatchProvider
from batch_ai.providers.base import JobExpectation, JobInfo, JobRefused, JobStatus
from batch_ai.providers.request_file import RequestFile
from batch_ai.stages.run import ACTOR, RunInfo
from batch_ai.workloads import Workload

log = logging.getLogger(__name__)

#: Provider job ids the ledger gives jobs the provider never ran.
REFUSED, REALTIME = "refused:", "realtime:"


def custom_id(record_id: int, attempts: int) -> str:
    """A record's custom id for its next attempt."""
    return f"r{record_id}-a{attempts + 1}"


def sent_as(job, rec) -> str:
    """The custom id a record of a job is sent under. Each attempt has its own; a record sent
    again in a smaller job split from one the provider refused keeps the one it had. (The
    ledger writes the same in SQL: :meth:`Ledger.mark_submitted`.)"""
    if job.parent_id is not None and rec.custom_id:
        return rec.custom_id
    return custom_id(rec.id, rec.attempts)


def custom_ids_for(job, records) -> dict[int, str]:
    """The custom id each record of a job is sent under (:func:`sent_as`)."""
    return {rec.id: sent_as(job, rec) for rec in records}


def aware(moment: datetime) -> datetime:
    """A timestamp read back from the ledger, in UTC (SQLite keeps no zone)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def job_workload(workload: Workload, job) -> Workload:
    """The workload as the job was planned with it: a backfill's job keeps its prompt and schema
    versions when a later run (with the configured ones) adopts it."""
    details = job.details or {}
    return workload.with_versions(details.get("prompt_version"), details.get("schema_version"))


def provider_job(adapter: BatchProvider, job) -> JobInfo:
    """The job as the provider sees it now (one the provider refused at creation, as the ledger does)."""
    if job.provider_job_id.startswith(REFUSED):
        return JobInfo(
            job.provider_job_id,
            JobStatus.FAILED,
            "refused when created",
            {"total": job.record_count},
            error=(job.details or {}).get("refused"),
        )
    if job.provider_job_id.startswith(REALTIME):
        return JobInfo(
            job.provider_job_id, JobStatus.COMPLETED, "answered by real-time calls", {"total": job.record_count}
        )
    return adapter.get_job(job.provider_job_id)


def submit(workload: Workload, ledger: Ledger, adapter: BatchProvider, token: str, run: RunInfo) -> str | None:
    """Create the provider job for a planned token, or re-attach to the one already created.

    Done under the job's claim, so no other process (a run adopting the work of one it thinks
    dead) can create it meanwhile; the provider is asked for the token before any create."""
    with ledger.claim_job(token):
        job = ledger.job(token)
        if job.provider_job_id:
            log.info("job %s was already submitted as %s; re-attaching", token, job.provider_job_id)
            return job.provider_job_id
        if job.status != JobState.PLANNED:
            log.info("job %s is %s; nothing to submit", token, job.status)
            return None
        workload = job_workload(workload, job)
        custom_ids = tuple(sent_as(job, rec) for rec in ledger.job_attempts(job.id, State.QUEUED))
        if not custom_ids:
            ledger.update_job(job.id, status=JobState.EMPTY, ended_at=utcnow())
            log.info("job %s has no queued records left; nothing to submit", token)
            return None
        expected = JobExpectation(
            custom_ids, aware(job.created_at), frozenset(ledger.provider_job_ids(workload.spec.provider.name))
        )
        info = adapter.find_job(token, expected)
        if info is not None:
            log.warning(
                "found provider job %s created earlier for %s (the ledger had not recorded it); using it, "
                "not creating another",
                info.provider_job_id,
                token,
            )
        else:
            info = _create(workload, ledger, adapter, job, run)
        if isinstance(info, JobRefused):  # refused as a whole at creation: the wait halves it
            ledger.mark_submitted(
                job.id,
                f"{REFUSED}{token}",
                {"refused": str(info)},
                run.run_id,
                ACTOR,
                reason=f"sent in job {token}, which the provider refused when it was created",
            )
            return f"{REFUSED}{token}"
        moved = ledger.mark_submitted(job.id, info.provider_job_id, info.details, run.run_id, ACTOR)
    log.info("job %s: %d records submitted as %s (%s)", token, moved, info.provider_job_id, info.raw_status)
    return info.provider_job_id


def _create(workload: Workload, ledger: Ledger, adapter: BatchProvider, job, run: RunInfo) -> JobInfo | JobRefused:
    """The paid call: the job's requests, written to a file a record at a time, sent to the
    provider; the refusal, when the provider refused the job as a whole when it was created."""
    options = workload.request_options()
    with RequestFile() as requests:
        for rec in ledger.iter_job_records(job.id, State.QUEUED):
            requests.add(adapter.build_request(sent_as(job, rec), workload.prompt_for(rec.input), options))
        try:
            info = adapter.submit(
                requests,
                job.token,
                model=workload.spec.provider.model,
                labels={"batch_ai_workload": workload.name, "batch_ai_run": run.run_id[:200]},
                dimensions=options.dimensions,
            )
        except JobRefused as exc:
            log.warning("the provider refused job %s when it was created: %s", job.token, exc)
            return exc
        info.details["staged_bytes"] = requests.size  # the request file sent (the report prices its storage)
        return info
