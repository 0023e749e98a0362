"""The ``job.collect`` task: stream a finished job's results, validate each, move every record on.

Results are matched to records by custom id, never by order. Each record's move and what its
line cost are written in one transaction per chunk, and a record another collect moved first
is left alone: a collect killed half-way, or run twice at once, moves and pays for every
record once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from typing import Any

from batch_ai.errors import ErrorKind, StageError
from batch_ai.ledger.bulk import STEP
from batch_ai.ledger.jobs import LineUsage
from batch_ai.ledger.states import JobState, State
from batch_ai.ledger.store import Change, Ledger, utcnow
from batch_ai.providers import BatchProvider
from batch_ai.providers.base import JobInfo, JobStatus
from batch_ai.providers.capabilities import capabilities
from batch_ai.stages.run import ACTOR, RunInfo
from batch_ai.stages.submit import REALTIME, REFUSED, job_workload, provider_job
from batch_ai.validation.records import OutputValidator
from batch_ai.workloads import Workload

log = logging.getLogger(__name__)

_MISSING_KIND = {
    JobStatus.COMPLETED: ErrorKind.MISSING_RESULT,
    JobStatus.EXPIRED: ErrorKind.EXPIRED,
    JobStatus.CANCELLED: ErrorKind.CANCELLED,
    JobStatus.FAILED: ErrorKind.JOB_FAILED,
}


def collect(workload: Workload, ledger: Ledger, adapter: BatchProvider, token: str, run: RunInfo) -> dict[str, Any]:
    """Stream each finished job's results (the job, and every smaller job split from it),
    validate each, and move every record of it on. A job still running at the provider (the wait
    ended without it) is left for the next run, which adopts it; the report names it."""
    root = ledger.job(token)
    if not root.provider_job_id and root.status != JobState.SPLIT:
        return {"token": token, "skipped": "never submitted"}
    tally: Counter = Counter()
    jobs, running, systemic = [], [], None
    for job in ledger.job_tree(root.id):
        systemic = systemic or (job.details or {}).get("systemic")
        if (job.details or {}).get("deadline_fallback"):
            tally.update(_unanswered_after_deadline(ledger, job, run))
            continue
        if job.status != JobState.SUBMITTED or not job.provider_job_id:
            continue
        info = provider_job(adapter, job)
        if not info.terminal:
            running.append(info.provider_job_id)
            log.warning(
                "job %s (%s) is still %s at the provider: left for the next run, which will collect it",
                job.token,
                info.provider_job_id,
                info.raw_status,
            )
            continue
        tally.update(collect_job(workload, ledger, adapter, job, info, run))
        jobs.append({"token": job.token, "provider_job_id": info.provider_job_id, "status": str(info.status)})
    summary = {
        "token": token,
        "provider_job_id": root.provider_job_id,
        "status": str(ledger.job(token).status),
        "jobs": jobs,
        **({"still_running": running} if running else {}),
        **dict(tally),
    }
    log.info("collect %s: %s", token, json.dumps(summary))
    if systemic:
        raise StageError(
            f"the provider refused every part of job {token} in the same way ({systemic}): that is not "
            f"one bad request but the job's configuration (model, endpoint, limits) or the provider; its "
            f"records are provider_error (job_failed) and go to review. Fix the cause, then requeue them."
        )
    return summary


def collect_job(
    workload: Workload, ledger: Ledger, adapter: BatchProvider, job, info: JobInfo, run: RunInfo
) -> dict[str, Any]:
    """Apply one terminal job's results, record its end, and delete what was staged for it."""
    jw = job_workload(workload, job)
    discount = capabilities().provider(jw.spec.provider.name).batch_discount
    results = adapter.iter_results(info) if not info.provider_job_id.startswith(REFUSED) else iter(())
    tally = apply_results(jw, ledger, job, results, info, run, discount=discount)
    # the result files' size (the report prices their storage)
    kept = {"result_bytes": tally.get("result_bytes", 0)}
    ledger.finish_job(job.id, str(info.status), {**info.details, "counts": info.counts, "error": info.error, **kept})
    if jw.spec.provider.delete_files_after_collect and not info.provider_job_id.startswith((REFUSED, REALTIME)):
        adapter.cleanup(info)
    return tally


def _unanswered_after_deadline(ledger: Ledger, job, run: RunInfo) -> dict[str, int]:
    """A job cancelled at the deadline was answered by real-time calls; what they did not answer
    (an interrupted fallback) is a transient error the next run retries."""
    left = ledger.job_records(job.id, State.SUBMITTED)
    reason = f"job {job.provider_job_id} was cancelled at the deadline and no real-time answer was saved"
    ledger.record_results(
        job.id,
        [
            Change(
                r.id, State.PROVIDER_ERROR, reason, {"error_kind": str(ErrorKind.CANCELLED), "error_message": reason}
            )
            for r in left
        ],
        {},
        actor=ACTOR,
        run_id=run.run_id,
    )
    if job.status == JobState.SUBMITTED:  # the fallback was interrupted before it could say so
        ledger.finish_job(job.id, JobState.CANCELLED, {})
    return {"unanswered": len(left)}


def record_id_of(custom_id: str) -> int | None:
    """The record id a custom id carries (``r{id}-a{attempt}``), or ``None`` for one we never sent."""
    head, sep, _ = custom_id.partition("-a")
    if not sep or not head.startswith("r") or not head[1:].isdigit():
        return None
    return int(head[1:])


class _Results:
    """Applies one job's result lines a chunk at a time: each chunk's records are read by the id
    their custom ids carry, their moves and what their lines cost written in one transaction."""

    def __init__(self, workload: Workload, ledger: Ledger, job, run: RunInfo, discount: float):
        self.workload, self.ledger, self.job, self.run, self.discount = workload, ledger, job, run, discount
        self.validator = OutputValidator.for_workload(workload)
        self.price = capabilities().provider(workload.spec.provider.name).price(workload.spec.provider.model)
        self.tally: Counter = Counter()
        self.seen: set[str] = set()  # the job's custom ids answered so far (bounded by the job)
        self.pending: list[Any] = []

    def add(self, result) -> None:
        self.tally["result_bytes"] += result.line_bytes
        if result.custom_id is None:
            self.tally["unreadable_result_line"] += 1
            log.warning("job %s: %s; its record counts as having no result", self.job.token, result.error_message)
            return
        if result.custom_id in self.seen:
            self.tally["duplicate_result"] += 1
            log.warning("job %s: second result for %s ignored", self.job.token, result.custom_id)
            return
        self.seen.add(result.custom_id)
        self.pending.append(result)
        if len(self.pending) >= min(STEP, self.validator.chunk):
            self.flush()

    def flush(self) -> None:
        ids = [rid for rid in (record_id_of(r.custom_id) for r in self.pending) if rid is not None]
        records = self.ledger.records_by_id(ids)
        changes, usage = [], {}
        for result in self.pending:
            rec = records.get(record_id_of(result.custom_id))
            if rec is None or rec.custom_id != result.custom_id or rec.job_id != self.job.id:
                self.tally["unknown_custom_id"] += 1
                log.warning("job %s: result for unknown custom id %r ignored", self.job.token, result.custom_id)
                continue
            if rec.state != State.SUBMITTED:  # collected by an earlier attempt of this task
                self.tally["already_collected"] += 1
                continue
            line_cost = self.price.cost(result.input_tokens, result.output_tokens, self.discount)
            # a later attempt: a retry, or a rerun asked for by a backfill
            usage[rec.id] = LineUsage(result.input_tokens, result.output_tokens, line_cost, rec.attempts > 1)
            changes.append(change_for(self.workload, rec, result, self.validator, (rec.cost_usd or 0.0) + line_cost))
        self.pending.clear()
        self.write(changes, usage)

    def write(self, changes: list[Change], usage: dict[int, LineUsage]) -> None:
        moved = self.ledger.record_results(self.job.id, changes, usage, actor=ACTOR, run_id=self.run.run_id)
        self.tally["already_collected"] += len(changes) - len(moved)
        self.tally.update(str(c.to) for c in moved)

    def unanswered(self, info: JobInfo) -> None:
        """Every record of the job still ``submitted`` had no result: its reason, by how the job ended."""
        for page in self.ledger.job_pages(self.job.id, State.SUBMITTED):
            self.write([_no_result(rec, info, self.job.record_count) for rec in page], {})


def apply_results(
    workload: Workload, ledger: Ledger, job, results, info: JobInfo, run: RunInfo, *, discount: float
) -> dict[str, Any]:
    """Validate each result, move its record on, and give every record without one its reason.

    Results are read and applied a chunk at a time; each chunk's moves are written with what
    its lines cost in one transaction: a collect killed half-way (or run twice at once) moves and
    pays for every record once."""
    applying = _Results(workload, ledger, job, run, discount)
    for result in results:
        applying.add(result)
    applying.flush()
    applying.unanswered(info)
    return dict(applying.tally)


def _no_result(rec, info: JobInfo, job_size: int) -> Change:
    """The move of a record its job returned no line for: why depends on how the job ended. The
    one record of a job the provider refused as a whole is the request it refused: a person looks."""
    if info.status == JobStatus.FAILED and job_size == 1:
        message = (
            f"the provider refused this record's request (job {info.provider_job_id}): {info.error or info.raw_status}"
        )
        return Change(
            rec.id,
            State.REVIEW_REQUIRED,
            message[:2000],
            {"error_kind": str(ErrorKind.BAD_REQUEST), "error_message": message[:2000], "completed_at": utcnow()},
        )
    kind = _MISSING_KIND[info.status]
    message = f"no result line for {rec.custom_id} in {info.raw_status} job {info.provider_job_id}" + (
        f": {info.error}" if info.error else ""
    )
    return Change(
        rec.id,
        State.PROVIDER_ERROR,
        message[:2000],
        {"error_kind": str(kind), "error_message": message[:2000], "completed_at": utcnow()},
    )


def review_reason(workload: Workload, custom_id: str, output: dict[str, Any]) -> str | None:
    """Why a valid output must wait for a person (a review rule, or the random spot check), or ``None``."""
    for rule in workload.spec.review.rules:
        why = rule.matches(output)
        if why:
            return f"review rule: {why}"
    rate = workload.spec.review.sample_rate
    # reproducible per record and attempt: a re-collect picks the same records
    if rate and int(hashlib.sha256(f"spot-check:{custom_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < rate:
        return f"random spot check ({rate:.0%} of valid outputs)"
    return None


def change_for(workload: Workload, rec, result, validator: OutputValidator, total_cost: float) -> Change:
    usage = {"input_tokens": result.input_tokens, "output_tokens": result.output_tokens, "cost_usd": total_cost}
    usage.update(completed_at=utcnow(), provider_request_id=result.request_id)
    if not result.answered:
        return Change(
            rec.id,
            State.PROVIDER_ERROR,
            result.error_message,
            {
                **usage,
                "error_kind": str(result.error_kind),
                "error_message": result.error_message,
            },
        )
    if result.refusal:
        to = State.REVIEW_REQUIRED if workload.spec.review.refusals else State.INVALID_OUTPUT
        return Change(
            rec.id,
            to,
            f"refused: {result.refusal}",
            {
                **usage,
                "output": None,
                "error_kind": str(ErrorKind.REFUSAL),
                "error_message": f"refused: {result.refusal}"[:2000],
                "validation_errors": ["refusal"],
            },
        )
    verdict = validator.check(result, rec.source_id, rec.input)
    if verdict.ok:
        why = verdict.review or review_reason(workload, rec.custom_id, verdict.output)
        return Change(
            rec.id,
            State.REVIEW_REQUIRED if why else State.COMPLETED,
            why or "valid output",
            {
                **usage,
                "output": verdict.output,
                "validation_errors": None,
                "error_kind": None,
                "error_message": why,
            },
        )
    errors = "; ".join(verdict.errors)[:2000]
    return Change(
        rec.id,
        State.INVALID_OUTPUT,
        errors,
        {
            **usage,
            "output": verdict.output if verdict.output is not None else {"raw": (result.output_text or "")[:5000]},
            "validation_errors": verdict.errors,
            "error_kind": str(ErrorKind.INVALID_OUTPUT),
            "error_message": errors,
        },
    )
