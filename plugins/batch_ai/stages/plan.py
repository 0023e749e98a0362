"""The ``plan`` tasks: take over earlier runs' unfinished work, then split the queued records into
provider jobs within the limits and write each job's intent to the ledger before any paid call.

:func:`group_requests` is the one decision of how requests become jobs (limits, minimum size,
the workload's below-minimum policy); the plan and the dry run both ask it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from batch_ai.errors import ErrorKind
from batch_ai.ledger.jobs import Plan
from batch_ai.ledger.states import State
from batch_ai.ledger.store import Change, Ledger
from batch_ai.providers import BatchProvider
from batch_ai.providers.base import request_size
from batch_ai.providers.capabilities import capabilities
from batch_ai.stages.run import RunInfo
from batch_ai.workloads import Workload

log = logging.getLogger(__name__)


def job_limits(workload: Workload) -> tuple[int, int, int]:
    """A workload's effective job limits: (max requests, max bytes, min requests) per job, the
    provider's own (the capability table) narrowed by the workload's ``batching``."""
    limits = capabilities().provider(workload.spec.provider.name).limits
    max_requests = min(filter(None, [limits.max_requests_per_job, workload.spec.batching.max_requests_per_job]))
    max_bytes = min(filter(None, [limits.max_bytes_per_job, workload.spec.batching.max_bytes_per_job]))
    return max_requests, max_bytes, limits.min_requests_per_job


def split_into_jobs(sizes: list[int], max_requests: int, max_bytes: int, min_requests: int) -> list[list[int]]:
    """Group request indexes into jobs within the limits, each job at least ``min_requests`` big.

    ``sizes`` are the request sizes in bytes. Assumes ``len(sizes) >= min_requests``.
    """
    groups: list[list[int]] = [[]]
    used = 0
    for i, size in enumerate(sizes):
        if groups[-1] and (len(groups[-1]) >= max_requests or used + size > max_bytes):
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += size
    if len(groups) > 1 and len(groups[-1]) < min_requests:
        # too small a tail: share the last two groups out evenly (each stays within the limits,
        # as the two together were split only because they exceeded one job)
        both = groups[-2] + groups[-1]
        half = len(both) // 2
        groups[-2:] = [both[:half], both[half:]]
    return groups


@dataclass
class Grouping:
    """How a workload's requests become jobs: index groups, or why they make no batch job."""

    groups: list[list[int]] = field(default_factory=list)  # one per job (a real-time series, below the minimum)
    below: str | None = None  # fewer than the provider's minimum job size
    realtime: bool = False  # below the minimum, and sent through real-time calls
    held: bool = False  # below the minimum, and held for a later run


def group_requests(workload: Workload, sizes: list[int]) -> Grouping:
    """Group requests of these sizes (bytes) into jobs as the plan does."""
    max_requests, max_bytes, min_requests = job_limits(workload)
    if not sizes:
        return Grouping()
    if len(sizes) < min_requests:
        below = (
            f"{len(sizes)} queued record(s) are fewer than the {min_requests} {workload.spec.provider.name} needs "
            f"for a batch job"
        )
        if workload.spec.provider.below_minimum == "hold":
            return Grouping(below=below, held=True)
        return Grouping([list(range(len(sizes)))], below=below, realtime=True)
    return Grouping(split_into_jobs(sizes, max_requests, max_bytes, min_requests))


def job_token(workload: Workload, run: RunInfo, n: int) -> str:
    """A job's submission token: letters, digits and hyphens, under 64 characters, so it can be
    an OpenAI metadata value, a Vertex display name and a Bedrock job name and client token."""
    run_tag = hashlib.sha256(run.run_id.encode()).hexdigest()[:10]
    return f"{workload.name.replace('_', '-')[:36]}-{run_tag}-{n:04d}"


def plan(workload: Workload, ledger: Ledger, adapter: BatchProvider, run: RunInfo, round_no: int = 0) -> list[str]:
    """Split queued records into provider jobs within the limits; write each job's intent.

    The run's first plan takes over what earlier runs left unfinished first (:func:`recovery.adopt`).
    Returns the submission tokens of the jobs this round must finish (a re-run of the task
    returns the same ones). Too few records for the provider's minimum job size are held for a
    later run or sent through real-time calls, as the workload's ``below_minimum`` says. A
    record whose request cannot be built (the prompt template fails on it) or is bigger than a
    whole job may hold goes to review saying so; the others go on.
    """
    from batch_ai.stages.recovery import adopt

    if round_no == 0:
        adopt(workload, ledger, adapter, run)
    first = len(ledger.run_tokens(workload.name, run.run_id)) + 1
    outcome: dict[str, Any] = {}

    def make_jobs(records) -> Plan:
        sendable, sizes, unsendable = _measure(workload, adapter, records)
        grouping = group_requests(workload, sizes)
        outcome.update(records=len(sendable), unsendable=len(unsendable), grouping=grouping)
        tokens = [job_token(workload, run, n) for n in range(first, first + len(grouping.groups))]
        return Plan(
            [(tok, [sendable[i].id for i in g]) for tok, g in zip(tokens, grouping.groups, strict=True)], unsendable
        )

    details = {
        "round": round_no,
        "prompt_version": workload.spec.prompt.version,
        "schema_version": workload.spec.output_schema.version,
    }
    planned = ledger.plan_jobs(
        workload.record_key(),
        workload.spec.provider.name,
        run.run_id,
        make_jobs,
        limit=run.params.record_limit,
        details=details,
    )
    _after(workload, ledger, adapter, run, planned, outcome)
    return ledger.open_tokens(workload.name, run.run_id, round_no)


def _after(workload: Workload, ledger: Ledger, adapter: BatchProvider, run: RunInfo, planned, outcome) -> None:
    """Say what was planned; answer records below the minimum in real time, or hold them."""
    from batch_ai.stages.realtime import run_realtime

    for token, size in planned:
        log.info("planned job %s with %d records", token, size)
    if outcome.get("unsendable"):
        log.warning(
            "%d record(s) cannot be sent to %s as they are and wait for review (see the report)",
            outcome["unsendable"],
            workload.spec.provider.name,
        )
    grouping: Grouping = outcome.get("grouping") or Grouping()
    if grouping.realtime:
        log.warning("%s: sending them through real-time calls (provider.below_minimum: realtime)", grouping.below)
        run_realtime(workload, ledger, adapter, planned[0][0], run)
    elif grouping.held:
        log.warning("%s: holding them for a later run (provider.below_minimum: hold)", grouping.below)
        ledger.set_run_detail(
            workload.name, run.run_id, "held", {"records": outcome["records"], "reason": grouping.below}
        )
    else:
        limits = job_limits(workload)
        log.info(
            "plan %s: %d queued records in %d job(s) (limits: %d requests, %d bytes, at least %d)",
            workload.name,
            outcome.get("records", 0),
            len(grouping.groups),
            *limits,
        )


def _measure(workload: Workload, adapter: BatchProvider, records) -> tuple[list[Any], list[int], list[Change]]:
    """The records whose request can be sent, their requests' sizes, and the changes sending the
    others (the template fails on them, or one alone is bigger than a job) to review."""
    from batch_ai.stages.submit import custom_id

    max_bytes = job_limits(workload)[1]
    options = workload.request_options()
    sendable, sizes, unsendable = [], [], []
    for rec in records:
        try:
            size = request_size(
                adapter.build_request(custom_id(rec.id, rec.attempts), workload.prompt_for(rec.input), options)
            )
        except Exception as exc:  # noqa: BLE001 - a template failing on one row is that row's problem
            reason = (
                f"the prompt template ({workload.spec.prompt.file}) fails on this record: {type(exc).__name__}: {exc}"
            )
            unsendable.append(_unsendable(rec, reason))
            continue
        if size > max_bytes:
            unsendable.append(
                _unsendable(
                    rec,
                    f"its request is {size} bytes, over the {max_bytes} a {workload.spec.provider.name} job may hold",
                )
            )
            continue
        sizes.append(size)
        sendable.append(rec)
    return sendable, sizes, unsendable


def _unsendable(rec, reason: str) -> Change:
    """A record whose request cannot be sent as it is: a person decides (reject it, or rerun it
    with another prompt version)."""
    message = f"cannot be sent: {reason}"[:2000]
    return Change(
        rec.id, State.REVIEW_REQUIRED, message, {"error_kind": str(ErrorKind.BAD_REQUEST), "error_message": message}
    )
