"""The ``plan`` tasks: take over earlier runs' unfinished work, then split the queued records into
provider jobs within the limits and write each job's intent to the ledger before any paid call.

:func:`group_requests` is the one decision of how requests become jobs (limits, minimum size,
the workload's below-minimum policy); the plan and the dry run both ask it.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

from batch_ai.errors import ErrorKind
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


class Grouper:
    """Groups requests into jobs as they come, within the limits, each job at least
    ``min_requests`` big; holds at most the last two groups (what a too-small tail is shared
    out with), so any number of requests is grouped in bounded memory."""

    def __init__(self, max_requests: int, max_bytes: int, min_requests: int):
        self.max_requests, self.max_bytes, self.min_requests = max_requests, max_bytes, min_requests
        self.held: list[list[Any]] = []
        self.used = 0
        self.count = 0

    def add(self, item: Any, size: int) -> list[list[Any]]:
        """Take one request (``size`` bytes); returns the groups that are now final."""
        done = []
        if not self.held or len(self.held[-1]) >= self.max_requests or self.used + size > self.max_bytes:
            if len(self.held) == 2:
                done.append(self.held.pop(0))
            self.held.append([])
            self.used = 0
        self.held[-1].append(item)
        self.used += size
        self.count += 1
        return done

    def finish(self) -> list[list[Any]]:
        """The groups still held. A tail below the minimum is shared out evenly with the group
        before it (each stays within the limits: the two together only exceeded one job)."""
        groups, self.held = self.held, []
        if len(groups) == 2 and len(groups[1]) < self.min_requests:
            both = groups[0] + groups[1]
            half = len(both) // 2
            groups = [both[:half], both[half:]]
        return groups


def split_into_jobs(sizes: list[int], max_requests: int, max_bytes: int, min_requests: int) -> list[list[int]]:
    """Group request indexes into jobs within the limits, each job at least ``min_requests`` big.

    ``sizes`` are the request sizes in bytes. Assumes ``len(sizes) >= min_requests``.
    """
    grouper = Grouper(max_requests, max_bytes, min_requests)
    groups = [g for i, size in enumerate(sizes) for g in grouper.add(i, size)]
    return groups + grouper.finish()


@dataclass
class Grouping:
    """How a workload's requests become jobs: index groups, or why they make no batch job."""

    groups: list[list[int]] = field(default_factory=list)  # one per job (a real-time series, below the minimum)
    below: str | None = None  # fewer than the provider's minimum job size
    realtime: bool = False  # below the minimum, and sent through real-time calls
    held: bool = False  # below the minimum, and held for a later run


def group_requests(workload: Workload, sizes: list[int]) -> Grouping:
    """Group requests of these sizes (bytes) into jobs as the plan does."""
    grouper = Grouper(*job_limits(workload))
    done = [g for i, size in enumerate(sizes) for g in grouper.add(i, size)]
    last = finish_grouping(workload, grouper, emitted=bool(done))
    return Grouping(done + last.groups, last.below, last.realtime, last.held)


def finish_grouping(workload: Workload, grouper: Grouper, *, emitted: bool) -> Grouping:
    """The last groups once every request was added (``emitted``: groups were final before):
    too few requests for the provider's minimum are held or sent in real time, as the workload
    says."""
    held = grouper.finish()
    minimum = grouper.min_requests
    if emitted or not held or grouper.count >= minimum:
        return Grouping(held)
    below = (
        f"{grouper.count} queued record(s) are fewer than the {minimum} {workload.spec.provider.name} needs "
        f"for a batch job"
    )
    if workload.spec.provider.below_minimum == "hold":
        return Grouping(below=below, held=True)
    return Grouping([[item for group in held for item in group]], below=below, realtime=True)


def job_token(workload: Workload, run: RunInfo, n: int) -> str:
    """A job's submission token: letters, digits and hyphens, under 64 characters, so it can be
    an OpenAI metadata value, a Vertex display name and a Bedrock job name and client token."""
    run_tag = hashlib.sha256(run.run_id.encode()).hexdigest()[:10]
    return f"{workload.name.replace('_', '-')[:36]}-{run_tag}-{n:04d}"


class JobPlanner:
    """Groups the records a plan claims into jobs, a page at a time (the ledger's ``Planner``):
    each record's request is built to know its size, and a record whose request cannot be sent
    goes to review."""

    def __init__(self, workload: Workload, adapter: BatchProvider, run: RunInfo, first: int):
        self.workload, self.adapter = workload, adapter
        self.grouper = Grouper(*job_limits(workload))
        self.options = workload.request_options()
        self.tokens = (job_token(workload, run, n) for n in itertools.count(first))
        self.emitted = False
        self.unsendable = 0
        self.grouping = Grouping()

    def take(self, records) -> tuple[list[tuple[str, list[int]]], list[Change]]:
        done, bad = [], []
        for rec in records:
            size, problem = self._size(rec)
            if problem is not None:
                bad.append(_unsendable(rec, problem))
                continue
            done += self.grouper.add(rec.id, size)
        self.unsendable += len(bad)
        self.emitted = self.emitted or bool(done)
        return [(next(self.tokens), ids) for ids in done], bad

    def finish(self) -> list[tuple[str, list[int]]]:
        self.grouping = finish_grouping(self.workload, self.grouper, emitted=self.emitted)
        return [(next(self.tokens), ids) for ids in self.grouping.groups]

    def _size(self, rec) -> tuple[int, str | None]:
        """The bytes of the record's request, or why it cannot be sent (the template fails on
        it, or it alone is bigger than a job)."""
        from batch_ai.stages.submit import custom_id

        spec = self.workload.spec
        try:
            prompt = self.workload.prompt_for(rec.input)
            size = request_size(self.adapter.build_request(custom_id(rec.id, rec.attempts), prompt, self.options))
        except Exception as exc:  # noqa: BLE001 - a template failing on one row is that row's problem
            why = f"{type(exc).__name__}: {exc}"
            return 0, f"the prompt template ({spec.prompt.file}) fails on this record: {why}"
        limit = self.grouper.max_bytes
        if size > limit:
            return 0, f"its request is {size} bytes, over the {limit} a {spec.provider.name} job may hold"
        return size, None


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
    planner = JobPlanner(workload, adapter, run, first)
    details = {
        "round": round_no,
        "prompt_version": workload.spec.prompt.version,
        "schema_version": workload.spec.output_schema.version,
    }
    planned = ledger.plan_jobs(
        workload.record_key(),
        workload.spec.provider.name,
        run.run_id,
        planner,
        limit=run.params.record_limit,
        details=details,
    )
    _after(workload, ledger, adapter, run, planned, planner)
    return ledger.open_tokens(workload.name, run.run_id, round_no)


def _after(
    workload: Workload, ledger: Ledger, adapter: BatchProvider, run: RunInfo, planned, planner: JobPlanner
) -> None:
    """Say what was planned; answer records below the minimum in real time, or hold them."""
    from batch_ai.stages.realtime import run_realtime

    for token, size in planned:
        log.info("planned job %s with %d records", token, size)
    if planner.unsendable:
        log.warning(
            "%d record(s) cannot be sent to %s as they are and wait for review (see the report)",
            planner.unsendable,
            workload.spec.provider.name,
        )
    grouping = planner.grouping
    if grouping.realtime:
        log.warning("%s: sending them through real-time calls (provider.below_minimum: realtime)", grouping.below)
        run_realtime(workload, ledger, adapter, planned[0][0], run)
    elif grouping.held:
        log.warning("%s: holding them for a later run (provider.below_minimum: hold)", grouping.below)
        ledger.set_run_detail(
            workload.name, run.run_id, "held", {"records": planner.grouper.count, "reason": grouping.below}
        )
    else:
        limits = job_limits(workload)
        log.info(
            "plan %s: %d queued records in %d job(s) (limits: %d requests, %d bytes, at least %d)",
            workload.name,
            planner.grouper.count,
            len(planned),
            *limits,
        )


def _unsendable(rec, reason: str) -> Change:
    """A record whose request cannot be sent as it is: a person decides (reject it, or rerun it
    with another prompt version)."""
    message = f"cannot be sent: {reason}"[:2000]
    return Change(
        rec.id, State.REVIEW_REQUIRED, message, {"error_kind": str(ErrorKind.BAD_REQUEST), "error_message": message}
    )
