"""The ``job.wait`` task's work between polls: create planned jobs, and halve a job the provider
refuses as a whole until the bad request is found.

Providers validate a job's input file before running any of it, and one request they refuse
(a malformed body, a parameter the model does not take) fails the whole job. Its records go
round again in two smaller jobs, each half of it; the half that fails again is halved again,
until the job that fails holds one record. That record goes to review with the provider's
message; every other record is answered normally, in the same run.

All of this happens in the job's wait task, which defers to the triggerer between rounds, so
no worker slot is held while the provider validates. The smaller jobs are planned in the
ledger (with tokens derived from the job's) before they are created, like any job, so a crash
at any point is recovered as any job is.

Two guards keep a job the provider will never take from multiplying: when both halves of a
job fail with exactly the job's own message, the failure is the job's configuration or the
provider, not a line, and the halving stops there (the collect then fails the run, naming it);
and no job is halved into more than :data:`MAX_REFUSED` refused jobs. Halves smaller than the
provider's minimum job size (Bedrock's) go through real-time calls instead.
"""

from __future__ import annotations

import logging

from batch_ai.ledger.states import JobState
from batch_ai.ledger.store import Ledger
from batch_ai.providers import BatchProvider
from batch_ai.providers.base import JobInfo, JobStatus
from batch_ai.stages.plan import job_limits
from batch_ai.stages.realtime import run_realtime
from batch_ai.stages.run import ACTOR
from batch_ai.stages.submit import job_workload, provider_job, submit

log = logging.getLogger(__name__)

#: The most refused jobs one job may be halved into (a few bad requests each take about
#: log2(records) of them).
MAX_REFUSED = 64


def part_token(job, part: int) -> str:
    """The token of part ``part`` of a split job tree (the whole job is part 1; the halves of
    part n are 2n and 2n+1): the root's token and the part number in base 36, under 64 chars."""
    digits, n = "", part
    while n:
        n, r = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
    root = (job.details or {}).get("root_token") or job.token
    return f"{root}-p{digits}"


def advance(workload, ledger: Ledger, adapter: BatchProvider, token: str, run) -> JobInfo | None:
    """Move the job ``token`` and its smaller jobs forward: create the planned ones, halve the
    refused ones. Returns a job still running at the provider (to wait for), or ``None`` when
    every job of the tree has ended."""
    while True:
        tree = ledger.job_tree(ledger.job(token).id)
        infos = {
            job.id: provider_job(adapter, job)
            for job in tree
            if job.status == JobState.SUBMITTED
            and job.provider_job_id
            and not (job.details or {}).get("deadline_fallback")
        }
        moved = False
        for job in tree:
            if job.status == JobState.PLANNED:
                submit(workload, ledger, adapter, job.token, run)
                moved = True
            elif (
                job.id in infos and infos[job.id].status == JobStatus.FAILED and _should_split(ledger, job, infos, tree)
            ):
                split(workload, ledger, adapter, job, infos[job.id], run)
                moved = True
        if not moved:
            return next((info for info in infos.values() if not info.terminal), None)


def _refusal(job, infos: dict[int, JobInfo]) -> str | None:
    """The provider's message for a job it refused as a whole (halved already, or failed now)."""
    if job.id in infos:
        info = infos[job.id]
        return (info.error or info.raw_status) if info.status == JobStatus.FAILED else None
    return (job.details or {}).get("refused") if job.status == JobState.SPLIT else None


def _should_split(ledger: Ledger, job, infos: dict[int, JobInfo], tree) -> bool:
    if job.record_count < 2:
        return False  # this is the request the provider refuses
    message = _refusal(job, infos)
    if any((j.details or {}).get("systemic") == message for j in tree):
        return False
    if sum(1 for j in tree if j.status == JobState.SPLIT) >= MAX_REFUSED:
        log.warning(
            "job %s: %d refused jobs in this tree already; its %d records are not halved further",
            job.token,
            MAX_REFUSED,
            job.record_count,
        )
        return False
    parent = next((j for j in tree if j.id == job.parent_id), None)
    sibling = next((j for j in tree if parent is not None and j.parent_id == parent.id and j.id != job.id), None)
    if parent is not None and sibling is not None and _refusal(parent, infos) == message == _refusal(sibling, infos):
        ledger.update_job(parent.id, details={**(parent.details or {}), "systemic": message})
        log.error(
            "both halves of job %s were refused with its own message (%s): not one bad request, so not halved further",
            parent.token,
            message,
        )
        return False
    return True


def split(workload, ledger: Ledger, adapter: BatchProvider, job, info: JobInfo, run) -> None:
    """Halve a refused job: two planned jobs (or real-time calls, below the provider's minimum)."""
    records = [r.id for r in ledger.job_records(job.id)]
    half = len(records) // 2
    groups = [records[:half], records[half:]]
    details = job.details or {}
    part = details.get("part", 1)
    keep = {k: details[k] for k in ("round", "prompt_version", "schema_version") if k in details}
    children = [
        {**keep, "part": n, "root_token": details.get("root_token") or job.token, "split_of": job.token}
        for n in (2 * part, 2 * part + 1)
    ]
    tokens = [part_token(job, c["part"]) for c in children]
    message = info.error or info.raw_status
    ledger.split_job(job, groups, tokens, children, message, actor=ACTOR, run_id=run.run_id)
    log.warning(
        "job %s (%d records) was refused as a whole: %s; halved into %s and %s to find the request it refuses",
        job.token,
        len(records),
        message,
        *tokens,
    )
    minimum = job_limits(workload)[2]
    for token, group in zip(tokens, groups, strict=True):
        if len(group) < minimum:
            log.info(
                "%s: %d records are below the provider's minimum job size; answered by real-time calls",
                token,
                len(group),
            )
            run_realtime(job_workload(workload, job), ledger, adapter, token, run)
