"""The stages of one run, as plain functions over a workload, the ledger and an adapter.

Operators are thin wrappers around these; tests can drive them too. Every stage is safe to
re-run: its effects are keyed in the ledger, so a retried or cleared task picks up where
the last attempt stopped instead of doing (or paying for) the work twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from batch_ai.ledger.jobs import LineUsage, Plan
from batch_ai.ledger.states import JobState, State
from batch_ai.ledger.store import Change, IntakeRow, Ledger, RecordKey, utcnow
from batch_ai.providers import BatchProvider
from batch_ai.providers.base import (
    TRANSIENT_ERRORS,
    ErrorKind,
    JobExpectation,
    JobInfo,
    JobRefused,
    JobStatus,
    Prompt,
    RequestOptions,
    request_size,
)
from batch_ai.providers.capabilities import capabilities
from batch_ai.source_rows import RowChecker
from batch_ai.source_rows import lines as source_lines
from batch_ai.validation.records import OutputValidator
from batch_ai.workloads import Workload

log = logging.getLogger(__name__)

ACTOR = "batch_ai"


class StageError(RuntimeError):
    """A stage cannot go on; the message says why and what to do."""


def record_key(w: Workload) -> RecordKey:
    s = w.spec
    return RecordKey(s.name, s.prompt.version, s.provider.model, s.output_schema.version)


def request_options(w: Workload) -> RequestOptions:
    p = w.spec.provider
    return RequestOptions(
        model=p.model,
        output_schema=w.output_schema,
        schema_name=f"{w.spec.output_schema.file.rsplit('/', 1)[0].rsplit('/', 1)[-1]}_{w.spec.output_schema.version}"[:64],
        max_output_tokens=p.max_output_tokens,
        temperature=p.temperature,
    )


def prompt_for(w: Workload, record_input: dict[str, Any]) -> Prompt:
    system, user = w.render(record_input)
    return Prompt(system, user)


# -- extract ----------------------------------------------------------------------------


#: States a backfill may send round again (its ``rerun_states`` param).
RERUN_STATES = sorted(str(s) for s in (State.INVALID_OUTPUT, State.PROVIDER_ERROR, State.REVIEW_REQUIRED,
                                       State.REJECTED, State.COMPLETED, State.PUBLISHED))


@dataclass(frozen=True)
class RunParams:
    """What a run was asked to do beyond its nightly default: the DAG's params (the trigger form)."""

    date_from: date | None = None
    date_to: date | None = None
    rerun_states: tuple[State, ...] = ()
    prompt_version: str | None = None
    schema_version: str | None = None
    record_limit: int | None = None
    dry_run: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> RunParams:
        """Check the params; a bad one fails the task with the param named."""
        p = dict(params or {})
        problems = []

        def day(name: str) -> date | None:
            value = p.get(name)
            if value in (None, ""):
                return None
            try:
                return date.fromisoformat(str(value)[:10])
            except ValueError:
                problems.append(f"{name} {value!r} is not a date (YYYY-MM-DD)")
                return None

        date_from, date_to = day("date_from"), day("date_to")
        if (date_from is None) != (date_to is None) and not problems:
            date_from = date_to = date_from or date_to  # one day given: that day
        if date_from and date_to and date_from > date_to:
            problems.append(f"date_from {date_from} is after date_to {date_to}")
        states = p.get("rerun_states") or []
        if isinstance(states, str):
            states = [s.strip() for s in states.split(",") if s.strip()]
        bad = [s for s in states if s not in RERUN_STATES]
        if bad:
            problems.append(f"rerun_states {bad} are not states a backfill can rerun; choose from {RERUN_STATES}")
        limit = p.get("record_limit")
        if limit in ("", None):
            limit = None
        elif not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            problems.append(f"record_limit {limit!r} must be a positive integer")
            limit = None
        if problems:
            raise StageError("bad run params: " + "; ".join(problems))
        return cls(
            date_from=date_from,
            date_to=date_to,
            rerun_states=tuple(State(s) for s in states),
            prompt_version=p.get("prompt_version") or None,
            schema_version=p.get("schema_version") or None,
            record_limit=limit,
            dry_run=bool(p.get("dry_run")),
        )

    @property
    def overrides_versions(self) -> bool:
        return bool(self.prompt_version or self.schema_version)

    def days(self, ds: str) -> list[date]:
        """The days whose source files the run reads: the params' range, else the run's own day."""
        if self.date_from is None:
            return [date.fromisoformat(ds)]
        return [self.date_from + timedelta(days=n) for n in range((self.date_to - self.date_from).days + 1)]


@dataclass
class RunInfo:
    run_id: str
    ds: str
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    params: RunParams = field(default_factory=RunParams)


def parse_row(w: Workload, number: int, line: bytes | str, where: str | None = None) -> IntakeRow:
    """Check one source line; a bad one becomes a dead letter that names the row and the problem."""
    return RowChecker(w.spec.source).parse(number, line, where)


def read_source(w: Workload, run: RunInfo) -> tuple[list[IntakeRow], list[str]]:
    """Every row of the run's source file(s), numbered across files in date order."""
    from airflow.sdk import ObjectStoragePath

    nightly = run.params.date_from is None
    checker = RowChecker(w.spec.source)
    rows: list[IntakeRow] = []
    uris = []
    for day in run.params.days(run.ds):
        ds = day.isoformat()
        uri = w.source_uri(ds=ds, data_interval_start=run.data_interval_start if nightly else None,
                           data_interval_end=run.data_interval_end if nightly else None)
        path = ObjectStoragePath(uri)
        if not path.exists():
            raise StageError(
                f"source file {uri} for {ds} does not exist. If there was nothing to process that day, "
                f"write an empty file; a missing export is treated as an error so it is noticed."
            )
        uris.append(uri)
        with path.open("rb") as fh:
            # the file's name and line (the full URI is in the extract log)
            for row in checker.parse_lines(source_lines(fh), path.name, len(rows) + 1):
                row.source_date = day
                rows.append(row)
    return rows, uris


def extract(w: Workload, ledger: Ledger, run: RunInfo) -> dict[str, Any]:
    """Read the run's source file(s), account for every row in the ledger, queue the work.

    A backfill (``rerun_states``) also sends the selected records of those rows round again;
    with a new prompt or schema version, only those (see :meth:`Ledger.intake`).
    """
    from batch_ai.publish import mark_pending

    ledger.check_artifact_versions(w.name, w.artifacts())
    rows, uris = read_source(w, run)
    ledger.start_run(w.name, run.run_id, run.data_interval_start, run.data_interval_end)
    ledger.set_extracted(w.name, run.run_id, len(rows))
    key = record_key(w)
    outcome = ledger.intake(key, w.spec.provider.name, run.run_id, rows, actor=ACTOR, rerun=run.params.rerun_states,
                            version_override=run.params.overrides_versions)
    for row in rows:
        if row.malformed:
            log.warning("dead letter: %s", row.malformed)
    if outcome["invalid_same_version"]:
        log.warning("%d invalid output(s) not rerun: the prompt and schema versions are the ones they failed with; "
                    "rerun them with a new prompt_version or schema_version", outcome["invalid_same_version"])
    pending = mark_pending(w, ledger, key)
    summary = {"source": uris if len(uris) > 1 else uris[0], "rows": len(rows), **outcome, "pending_in_sink": pending}
    log.info("extract %s: %s", w.name, json.dumps(summary, default=str))
    return summary


def estimate_tokens(text: str) -> int:
    """A rough token count (four characters a token) for forecasts before anything is sent."""
    return max(1, math.ceil(len(text) / 4))


def dry_run(w: Workload, ledger: Ledger, adapter: BatchProvider, run: RunInfo) -> dict[str, Any]:
    """What the run would submit and what it would cost, changing nothing: the intake is done in
    a transaction that is rolled back, and no provider is called."""
    from sqlalchemy import select

    from batch_ai.ledger import tables as t

    rows, uris = read_source(w, run)
    key = record_key(w)
    with ledger.engine.connect() as conn:
        tx = conn.begin()
        try:
            outcome = ledger.intake(key, w.spec.provider.name, run.run_id, rows, actor=ACTOR,
                                    rerun=run.params.rerun_states, conn=conn,
                                    version_override=run.params.overrides_versions)
            rc = t.records.c
            queued = list(conn.execute(select(rc.id, rc.input, rc.attempts)
                                       .where(key.where(), rc.state == State.QUEUED).order_by(rc.id)))
        finally:
            tx.rollback()
    if run.params.record_limit is not None:
        queued = queued[: run.params.record_limit]
    options = request_options(w)
    max_requests, max_bytes, min_requests = job_limits(w)
    sizes, tokens_in = [], 0
    for rec in queued:
        prompt = prompt_for(w, rec.input)
        sizes.append(request_size(adapter.build_request(_custom_id(rec.id, rec.attempts), prompt, options)))
        tokens_in += estimate_tokens(prompt.system) + estimate_tokens(prompt.user)
    mean_out = ledger.mean_output_tokens(w.name)
    per_record_out = mean_out if mean_out is not None else w.spec.provider.max_output_tokens
    tokens_out = round(per_record_out * len(queued))
    caps = capabilities()
    pcaps = caps.provider(w.spec.provider.name)
    price = pcaps.price(w.spec.provider.model)
    discount, below = pcaps.batch_discount, None
    if queued and len(queued) < min_requests:  # as plan() would do
        below = f"{len(queued)} record(s), fewer than the {min_requests} a {w.spec.provider.name} job needs: "
        if w.spec.provider.below_minimum == "hold":
            below += "held for a later run"
            queued, tokens_in, tokens_out = [], 0, 0
        else:
            below += "real-time calls at the full price"
            discount = 1.0
        jobs = 0
    else:
        jobs = len(split_into_jobs(sizes, max_requests, max_bytes, min_requests)) if queued else 0
    summary = {
        "dry_run": True,
        "source": uris,
        "rows": len(rows),
        "intake": dict(outcome),
        "would_submit": len(queued),
        "jobs": jobs,
        "prompt_version": w.spec.prompt.version,
        "schema_version": w.spec.output_schema.version,
        "estimated_input_tokens": tokens_in,
        "estimated_output_tokens": tokens_out,
        "output_tokens_basis": "mean of earlier results" if mean_out is not None else "max_output_tokens (upper bound)",
        "below_minimum": below,
        "batch_cost_usd": round(price.cost(tokens_in, tokens_out, discount), 6),
        "realtime_cost_usd": round(price.cost(tokens_in, tokens_out), 6),
        "prices_as_of": caps.prices_as_of,
    }
    ledger.start_run(w.name, run.run_id, run.data_interval_start, run.data_interval_end)
    ledger.set_run_detail(w.name, run.run_id, "dry_run", summary)
    log.info("dry run %s, nothing submitted: %s", w.name, json.dumps(summary, default=str))
    return summary


# -- sample -----------------------------------------------------------------------------


def sample(w: Workload, ledger: Ledger, adapter: BatchProvider, run: RunInfo) -> dict[str, Any]:
    """Run a few queued records in real time; stop before any batch spend if they look wrong."""
    cfg = w.spec.sample
    queued = ledger.records_in_state(record_key(w), State.QUEUED)
    if not queued or cfg.size == 0:
        log.info("sample: nothing to sample (%d queued)", len(queued))
        return {"size": 0, "queued": len(queued)}
    picked = random.Random(run.run_id).sample(queued, min(cfg.size, len(queued)))
    validator = OutputValidator.for_workload(w)
    options = request_options(w)
    tally: Counter = Counter()
    tokens_in = tokens_out = 0
    prompts = {}
    for rec in picked:
        try:
            prompts[rec.id] = prompt_for(w, rec.input)
        except Exception as exc:  # noqa: BLE001 - one row's problem: plan sends it to review
            log.warning("sample %s: the prompt template fails on it (%s); not sampled", rec.source_id, exc)
    picked = [rec for rec in picked if rec.id in prompts]
    if not picked:
        return {"size": 0, "queued": len(queued)}
    for rec in picked:
        result = adapter.realtime(f"sample-{rec.id}", prompts[rec.id], options)
        tokens_in += result.input_tokens
        tokens_out += result.output_tokens
        tally["max_input_tokens"] = max(tally["max_input_tokens"], result.input_tokens)
        if result.refusal:
            tally["refused"] += 1
            log.info("sample %s: refused: %s", rec.source_id, result.refusal)
        elif not result.answered:
            tally["error"] += 1
            log.info("sample %s: %s: %s", rec.source_id, result.error_kind, result.error_message)
        else:
            verdict = validator.validate(result.output_text, rec.source_id, rec.input)
            tally["valid" if verdict.ok else "invalid"] += 1
            log.info("sample %s: %s", rec.source_id, "valid" if verdict.ok else "; ".join(verdict.errors))
    n = len(picked)
    caps = capabilities()
    pcaps = caps.provider(w.spec.provider.name)
    price = pcaps.price(w.spec.provider.model)
    to_submit = min(len(queued), run.params.record_limit or len(queued))
    forecast = price.cost(tokens_in, tokens_out, pcaps.batch_discount) / n * to_submit
    summary = {
        "size": n,
        "queued": len(queued),
        "valid_rate": round(tally["valid"] / n, 3),
        "refusal_rate": round(tally["refused"] / n, 3),
        "max_input_tokens": tally["max_input_tokens"],
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "cost_usd": round(price.cost(tokens_in, tokens_out), 6),
        "batch_forecast_usd": round(forecast, 6),
        "prices_as_of": caps.prices_as_of,
    }
    budget = w.spec.budget.max_batch_usd
    summary["budget_usd"] = budget
    ledger.set_run_detail(w.name, run.run_id, "sample", summary)
    log.info("sample %s: %s", w.name, json.dumps(summary))
    if budget is not None and forecast > budget:
        raise StageError(
            f"the batch cost forecast ${forecast:.4f} for {to_submit} record(s) (from a sample of {n}, "
            f"prices as of {caps.prices_as_of}) is over the budget of ${budget:.4f} in {w.path.name}; nothing was "
            f"submitted. Raise budget.max_batch_usd, or run part of the work with the record_limit param."
        )
    problems = []
    if summary["valid_rate"] < cfg.min_valid_rate:
        problems.append(f"schema-valid rate {summary['valid_rate']:.0%} is below {cfg.min_valid_rate:.0%}")
    if summary["refusal_rate"] > cfg.max_refusal_rate:
        problems.append(f"refusal rate {summary['refusal_rate']:.0%} is above {cfg.max_refusal_rate:.0%}")
    if summary["max_input_tokens"] > cfg.max_input_tokens:
        problems.append(f"a request took {summary['max_input_tokens']} input tokens, over {cfg.max_input_tokens}")
    if problems:
        raise StageError(
            f"sample of {n} records failed, nothing was submitted: {'; '.join(problems)}. "
            f"Check the prompt ({w.spec.prompt.file}) and schema, or adjust sample thresholds in {w.path.name}."
        )
    return summary


# -- plan and submit --------------------------------------------------------------------


def adapter_for(w: Workload) -> BatchProvider:
    from batch_ai.providers import get_adapter

    p = w.spec.provider
    return get_adapter(p.name, w.conn_id, region=p.region, staging_uri=p.staging_uri, role_arn=p.role_arn)


def _token(w: Workload, run: RunInfo, n: int) -> str:
    """A job's submission token: letters, digits and hyphens, under 64 characters, so it can be
    an OpenAI metadata value, a Vertex display name and a Bedrock job name and client token."""
    run_tag = hashlib.sha256(run.run_id.encode()).hexdigest()[:10]
    return f"{w.name.replace('_', '-')[:36]}-{run_tag}-{n:04d}"


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


def job_limits(w: Workload) -> tuple[int, int, int]:
    """A workload's effective job limits: (max requests, max bytes, min requests) per job, the
    provider's own (the capability table) narrowed by the workload's ``batching``."""
    limits = capabilities().provider(w.spec.provider.name).limits
    max_requests = min(filter(None, [limits.max_requests_per_job, w.spec.batching.max_requests_per_job]))
    max_bytes = min(filter(None, [limits.max_bytes_per_job, w.spec.batching.max_bytes_per_job]))
    return max_requests, max_bytes, limits.min_requests_per_job


def plan(w: Workload, ledger: Ledger, adapter: BatchProvider, run: RunInfo, round_no: int = 0) -> list[str]:
    """Split queued records into provider jobs within the limits; write each job's intent.

    The run's first plan takes over what earlier runs left unfinished first (:func:`recovery.adopt`).
    Returns the submission tokens of the jobs this round must finish (a re-run of the task
    returns the same ones). Too few records for the provider's minimum job size are held for a
    later run or sent through real-time calls, as the workload's ``below_minimum`` says. A
    record whose request cannot be built (the prompt template fails on it) or is bigger than a
    whole job may hold goes to review saying so; the others go on.
    """
    from batch_ai.recovery import adopt

    if round_no == 0:
        adopt(w, ledger, adapter, run)
    key = record_key(w)
    max_requests, max_bytes, min_requests = job_limits(w)
    options = request_options(w)
    first = len(ledger.run_tokens(w.name, run.run_id)) + 1
    outcome: dict[str, Any] = {}

    def make_jobs(records) -> Plan:
        plan = Plan()
        sizes, sendable = [], []
        for rec in records:
            try:
                size = request_size(adapter.build_request(_custom_id(rec.id, rec.attempts), prompt_for(w, rec.input), options))
            except Exception as exc:  # noqa: BLE001 - a template failing on one row is that row's problem
                plan.dead.append(_unsendable(rec, f"the prompt template ({w.spec.prompt.file}) fails on this record: "
                                                   f"{type(exc).__name__}: {exc}"))
                continue
            if size > max_bytes:
                plan.dead.append(_unsendable(rec, f"its request is {size} bytes, over the {max_bytes} a "
                                                   f"{w.spec.provider.name} job may hold"))
                continue
            sizes.append(size)
            sendable.append(rec)
        outcome["records"], outcome["dead"] = len(sendable), len(plan.dead)
        if not sendable:
            return plan
        if len(sendable) < min_requests:
            outcome["below"] = (f"{len(sendable)} queued record(s) are fewer than the {min_requests} "
                                f"{w.spec.provider.name} needs for a batch job")
            if w.spec.provider.below_minimum == "hold":
                return plan
            outcome["realtime"] = _token(w, run, first)
            plan.jobs.append((outcome["realtime"], [r.id for r in sendable]))
            return plan
        groups = split_into_jobs(sizes, max_requests, max_bytes, min_requests)
        outcome["jobs"] = len(groups)
        plan.jobs += [(_token(w, run, n), [sendable[i].id for i in g]) for n, g in enumerate(groups, start=first)]
        return plan

    details = {"round": round_no, "prompt_version": w.spec.prompt.version, "schema_version": w.spec.output_schema.version}
    for token, size in ledger.plan_jobs(key, w.spec.provider.name, run.run_id, make_jobs, limit=run.params.record_limit,
                                        details=details):
        log.info("planned job %s with %d records", token, size)
    if outcome.get("dead"):
        log.warning("%d record(s) cannot be sent to %s as they are and wait for review (see the report)",
                    outcome["dead"], w.spec.provider.name)
    if "realtime" in outcome:
        log.warning("%s: sending them through real-time calls (provider.below_minimum: realtime)", outcome["below"])
        run_realtime(w, ledger, adapter, outcome["realtime"], run)
    elif "below" in outcome:
        log.warning("%s: holding them for a later run (provider.below_minimum: hold)", outcome["below"])
        ledger.set_run_detail(w.name, run.run_id, "held", {"records": outcome["records"], "reason": outcome["below"]})
    else:
        log.info("plan %s: %d queued records in %d job(s) (limits: %d requests, %d bytes, at least %d)", w.name,
                 outcome.get("records", 0), outcome.get("jobs", 0), max_requests, max_bytes, min_requests)
    return ledger.open_tokens(w.name, run.run_id, round_no)


def _unsendable(rec, reason: str) -> Change:
    """A record whose request cannot be sent as it is: a person decides (reject it, or rerun it
    with another prompt version)."""
    message = f"cannot be sent: {reason}"
    return Change(rec.id, State.REVIEW_REQUIRED, message[:2000], {"error_kind": str(ErrorKind.BAD_REQUEST),
                                                                  "error_message": message[:2000]})


def _custom_id(record_id: int, attempts: int) -> str:
    return f"r{record_id}-a{attempts + 1}"


def custom_ids_for(job, records) -> dict[int, str]:
    """The custom id each record of a job is sent under. Each attempt has its own; a record sent
    again in a smaller job split from one the provider refused keeps the one it had."""
    if job.parent_id is not None:
        return {rec.id: rec.custom_id or _custom_id(rec.id, rec.attempts) for rec in records}
    return {rec.id: _custom_id(rec.id, rec.attempts) for rec in records}


def aware(moment: datetime) -> datetime:
    """A timestamp read back from the ledger, in UTC (SQLite keeps no zone)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def job_workload(w: Workload, job) -> Workload:
    """The workload as the job was planned with it: a backfill's job keeps its prompt and schema
    versions when a later run (with the configured ones) adopts it."""
    details = job.details or {}
    return w.with_versions(details.get("prompt_version"), details.get("schema_version"))


#: Provider job ids the ledger gives jobs the provider never ran.
REFUSED, REALTIME = "refused:", "realtime:"


def provider_job(adapter: BatchProvider, job) -> JobInfo:
    """The job as the provider sees it now (one the provider refused at creation, as the ledger does)."""
    if job.provider_job_id.startswith(REFUSED):
        return JobInfo(job.provider_job_id, JobStatus.FAILED, "refused when created", {"total": job.record_count},
                       error=(job.details or {}).get("refused"))
    if job.provider_job_id.startswith(REALTIME):
        return JobInfo(job.provider_job_id, JobStatus.COMPLETED, "answered by real-time calls", {"total": job.record_count})
    return adapter.get_job(job.provider_job_id)


def submit(w: Workload, ledger: Ledger, adapter: BatchProvider, token: str, run: RunInfo) -> str | None:
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
        w = job_workload(w, job)
        records = ledger.job_records(job.id, State.QUEUED)
        if not records:
            ledger.update_job(job.id, status=JobState.EMPTY, ended_at=utcnow())
            log.info("job %s has no queued records left; nothing to submit", token)
            return None
        custom_ids = custom_ids_for(job, records)
        expected = JobExpectation(tuple(custom_ids.values()), aware(job.created_at),
                                  frozenset(ledger.provider_job_ids(w.spec.provider.name)))
        found = adapter.find_job(token, expected)
        if found is not None:
            log.warning("found provider job %s created earlier for %s (the ledger had not recorded it); using it, "
                        "not creating another", found.provider_job_id, token)
            info = found
        else:
            options = request_options(w)
            requests = [adapter.build_request(custom_ids[rec.id], prompt_for(w, rec.input), options) for rec in records]
            try:
                info = adapter.submit(requests, token, model=w.spec.provider.model,
                                      labels={"batch_ai_workload": w.name, "batch_ai_run": run.run_id[:200]})
            except JobRefused as exc:
                log.warning("the provider refused job %s when it was created: %s", token, exc)
                ledger.mark_submitted(job.id, f"{REFUSED}{token}", {"refused": str(exc)}, custom_ids, run.run_id, ACTOR,
                                      reason=f"sent in job {token}, which the provider refused when it was created")
                return f"{REFUSED}{token}"
        ledger.mark_submitted(job.id, info.provider_job_id, info.details, custom_ids, run.run_id, ACTOR)
    log.info("job %s: %d records submitted as %s (%s)", token, len(records), info.provider_job_id, info.raw_status)
    return info.provider_job_id


# -- retry rounds -----------------------------------------------------------------------


def requeue_for_retry(w: Workload, ledger: Ledger, run: RunInfo, round_no: int, *, requeue: bool = True) -> dict[str, int]:
    """Queue again the records whose provider error is transient and whose attempts are not used
    up; send the others (attempt cap reached, or an error a retry will not fix) to review.

    Looks at every such record of the workload, so what failed on an earlier night is taken too.
    With ``requeue=False`` (after the last round) only the review part is done: what could still
    be retried waits for the next run.
    """
    cap = w.spec.retry.max_attempts
    transient_kinds = {str(k) for k in TRANSIENT_ERRORS}

    def decide(rec) -> Change | None:
        transient = rec.error_kind in transient_kinds
        if transient and rec.attempts < cap:
            if not requeue:
                return None
            return Change(rec.id, State.QUEUED, f"retry round {round_no}: {rec.error_kind} on attempt {rec.attempts}")
        if transient:
            return Change(rec.id, State.REVIEW_REQUIRED, f"still {rec.error_kind} after {rec.attempts} attempts (the cap is {cap})")
        return Change(rec.id, State.REVIEW_REQUIRED, f"{rec.error_kind} is not fixed by a retry")

    changes = ledger.move(record_key(w), State.PROVIDER_ERROR, decide, actor=ACTOR, run_id=run.run_id)
    outcome = Counter(str(c.to) for c in changes)
    summary = {"requeued": outcome[str(State.QUEUED)], "to_review": outcome[str(State.REVIEW_REQUIRED)]}
    log.info("%s of %s: %s", f"retry round {round_no}" if requeue else "after the retry rounds", w.name, json.dumps(summary))
    return summary


def backoff_seconds(w: Workload, round_no: int) -> float:
    r = w.spec.retry
    return r.backoff_seconds * r.backoff_factor ** (round_no - 1)


# -- quality gate -----------------------------------------------------------------------


def gate(w: Workload, ledger: Ledger, run: RunInfo):
    """Run the great-expectations gate over the records about to be published."""
    import pandas as pd

    from batch_ai.validation.gate import run_gate

    sink = w.spec.sink
    ready = ledger.records_in_state(record_key(w), State.COMPLETED)
    outputs = pd.DataFrame(
        [{sink.key: r.source_id, **{c: (r.output or {}).get(c) for c in sink.columns}} for r in ready],
        columns=[sink.key, *sink.columns],
    )
    states = ledger.run_accounting(w.name, run.run_id)["states"]
    valid = states[State.COMPLETED] + states[State.PUBLISHED]
    answered = [True] * valid + [False] * states[State.INVALID_OUTPUT]
    verdict = run_gate(w, outputs, answered)
    # what a person approving the publish sees: the counts and a few of the outputs
    shown = [{sink.key: r.source_id, **{c: (r.output or {}).get(c) for c in sink.columns[:3]}} for r in ready[:3]]
    ledger.set_run_detail(w.name, run.run_id, "gate", {"success": verdict.success, "failed": verdict.failures(),
                                                       "records_ready": len(ready), "sample": shown,
                                                       # publish takes exactly these, not what arrived after the gate
                                                       "record_ids": [r.id for r in ready]})
    return verdict


# -- collect ----------------------------------------------------------------------------

_MISSING_KIND = {
    JobStatus.COMPLETED: ErrorKind.MISSING_RESULT,
    JobStatus.EXPIRED: ErrorKind.EXPIRED,
    JobStatus.CANCELLED: ErrorKind.CANCELLED,
    JobStatus.FAILED: ErrorKind.JOB_FAILED,
}


def collect(w: Workload, ledger: Ledger, adapter: BatchProvider, token: str, run: RunInfo) -> dict[str, Any]:
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
            log.warning("job %s (%s) is still %s at the provider: left for the next run, which will collect it",
                        job.token, info.provider_job_id, info.raw_status)
            continue
        tally.update(collect_job(w, ledger, adapter, job, info, run))
        jobs.append({"token": job.token, "provider_job_id": info.provider_job_id, "status": str(info.status)})
    summary = {"token": token, "provider_job_id": root.provider_job_id, "status": str(ledger.job(token).status),
               "jobs": jobs, **({"still_running": running} if running else {}), **dict(tally)}
    log.info("collect %s: %s", token, json.dumps(summary))
    if systemic:
        raise StageError(f"the provider refused every part of job {token} in the same way ({systemic}): that is not "
                         f"one bad request but the job's configuration (model, endpoint, limits) or the provider; its "
                         f"records are provider_error (job_failed) and go to review. Fix the cause, then requeue them.")
    return summary


def collect_job(w: Workload, ledger: Ledger, adapter: BatchProvider, job, info: JobInfo, run: RunInfo) -> dict[str, Any]:
    """Apply one terminal job's results, record its end, and delete what was staged for it."""
    jw = job_workload(w, job)
    discount = capabilities().provider(jw.spec.provider.name).batch_discount
    results = adapter.iter_results(info) if not info.provider_job_id.startswith(REFUSED) else iter(())
    tally = _apply_results(jw, ledger, job, results, info, run, discount=discount)
    ledger.finish_job(job.id, str(info.status), {**info.details, "counts": info.counts, "error": info.error})
    if jw.spec.provider.delete_files_after_collect and not info.provider_job_id.startswith((REFUSED, REALTIME)):
        adapter.cleanup(info)
    return tally


def _unanswered_after_deadline(ledger: Ledger, job, run: RunInfo) -> dict[str, int]:
    """A job cancelled at the deadline was answered by real-time calls; what they did not answer
    (an interrupted fallback) is a transient error the next run retries."""
    left = ledger.job_records(job.id, State.SUBMITTED)
    reason = f"job {job.provider_job_id} was cancelled at the deadline and no real-time answer was saved"
    ledger.record_results(job.id, [Change(r.id, State.PROVIDER_ERROR, reason, {"error_kind": str(ErrorKind.CANCELLED),
                                                                               "error_message": reason}) for r in left],
                          {}, actor=ACTOR, run_id=run.run_id)
    if job.status == JobState.SUBMITTED:  # the fallback was interrupted before it could say so
        ledger.finish_job(job.id, JobState.CANCELLED, {})
    return {"unanswered": len(left)}


class _RealtimeCalls:
    """Real-time calls for a list of records, at most ``per_minute``; the first call that fails
    (after the SDK's own retries) ends the series, so the answers already paid for are kept and
    the records not reached are told apart (``failure``)."""

    def __init__(self, w: Workload, adapter: BatchProvider, records, custom_ids: dict[int, str], per_minute: float | None = None):
        self.w, self.adapter, self.records, self.custom_ids = w, adapter, records, custom_ids
        self.gap = 60.0 / per_minute if per_minute else 0.0
        self.failure: Exception | None = None

    def __iter__(self):
        import time

        options = request_options(self.w)
        last = None
        for rec in self.records:
            if last is not None and self.gap:
                time.sleep(max(0.0, last + self.gap - time.monotonic()))
            last = time.monotonic()
            try:
                yield self.adapter.realtime(self.custom_ids[rec.id], prompt_for(self.w, rec.input), options)
            except Exception as exc:  # noqa: BLE001 - recorded, and the rest are marked below
                self.failure = exc
                log.warning("real-time call for record %s failed, stopping here: %s", rec.id, exc)
                return


def deadline_at(w: Workload, ledger: Ledger, run: RunInfo, queued_at: datetime | None = None) -> datetime | None:
    """When the run's results are due: ``deadline.hours`` after the DAG run was queued (as
    Airflow's deadline alert counts), or, where Airflow has no queue time (``airflow dags
    test``), after the run's extract started (in the ledger)."""
    if w.spec.deadline is None:
        return None
    from sqlalchemy import select

    from batch_ai.ledger import tables as t

    started = queued_at
    if started is None:
        with ledger.engine.connect() as conn:
            started = conn.scalar(select(t.runs.c.started_at).where(t.runs.c.workload == w.name, t.runs.c.run_id == run.run_id))
    started = started or utcnow()
    started = started if started.tzinfo else started.replace(tzinfo=timezone.utc)
    return started + timedelta(hours=w.spec.deadline.hours)


def deadline_fallback(w: Workload, ledger: Ledger, adapter: BatchProvider, token: str, run: RunInfo, due: datetime) -> dict[str, Any]:
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
    answers = _RealtimeCalls(w, adapter, records, {r.id: r.custom_id for r in records}, w.spec.deadline.realtime_per_minute)
    ledger.update_job(job.id, details={**(job.details or {}), "deadline_fallback": True})
    info = JobInfo(job.provider_job_id, JobStatus.COMPLETED, "answered in real time after the deadline", {"total": len(records)})
    before = ledger.job(token).cost_usd or 0.0
    # a record the calls did not reach becomes provider_error (missing_result), retried later
    tally = _apply_results(w, ledger, ledger.job(token), answers, info, run, discount=1.0)
    paid = (ledger.job(token).cost_usd or 0.0) - before
    ledger.finish_job(job.id, JobState.CANCELLED if cancelled else JobState.COMPLETED, {"realtime_cost_usd": paid})
    summary = {"deadline_at": due.isoformat(timespec="seconds"), "records": len(records),
               "cancelled": [job.provider_job_id] if cancelled else [], "realtime_cost_usd": round(paid, 6), **tally}
    earlier = ledger.run_details(w.name, run.run_id).get("deadline")
    if earlier:  # another job of the run missed it too
        summary = {**summary, "records": earlier["records"] + len(records), "cancelled": earlier["cancelled"] + summary["cancelled"],
                   "realtime_cost_usd": round(earlier["realtime_cost_usd"] + paid, 6)}
    ledger.set_run_detail(w.name, run.run_id, "deadline", summary)
    log.warning("deadline %s missed: job %s %s; %d record(s) answered through real-time calls: %s", due.isoformat(),
                job.provider_job_id, "cancelled" if cancelled else "not cancelled", len(records), json.dumps(tally))
    return summary


def run_realtime(w: Workload, ledger: Ledger, adapter: BatchProvider, token: str, run: RunInfo) -> dict[str, Any]:
    """Process a planned job's records with real-time calls instead of a batch job (at full price)."""
    job = ledger.job(token)
    records = ledger.job_records(job.id, State.QUEUED)
    custom_ids = {rec.id: _custom_id(rec.id, rec.attempts) for rec in records}
    ledger.mark_submitted(job.id, f"{REALTIME}{token}", {"kind": "realtime"}, custom_ids, run.run_id, ACTOR)
    # a call that fails ends the series; the records not reached become provider_error
    results = _RealtimeCalls(w, adapter, records, custom_ids)
    info = JobInfo(f"{REALTIME}{token}", JobStatus.COMPLETED, "realtime", {"total": len(records)})
    summary = _apply_results(w, ledger, ledger.job(token), results, info, run, discount=1.0)
    ledger.finish_job(job.id, JobState.COMPLETED, {"counts": info.counts})
    log.info("real-time %s: %s", token, json.dumps(summary))
    return summary


def _apply_results(w: Workload, ledger: Ledger, job, results, info: JobInfo, run: RunInfo, *, discount: float) -> dict[str, Any]:
    """Validate each result, move its record on, and give every record without one its reason.

    Moves are written in chunks, each with what its lines cost, in one transaction: a collect
    killed half-way (or run twice at once) moves and pays for every record once."""
    records = {r.custom_id: r for r in ledger.job_records(job.id)}
    validator = OutputValidator.for_workload(w)
    price = capabilities().provider(w.spec.provider.name).price(w.spec.provider.model)
    tally: Counter = Counter()
    seen: set[str] = set()
    pending: list[Change] = []
    usage: dict[int, LineUsage] = {}

    def flush() -> None:
        moved = ledger.record_results(job.id, pending, usage, actor=ACTOR, run_id=run.run_id)
        tally["already_collected"] += len(pending) - len(moved)
        tally.update(str(c.to) for c in moved)
        pending.clear()
        usage.clear()

    for result in results:
        if result.custom_id is None:
            tally["unreadable_result_line"] += 1
            log.warning("job %s: %s; its record counts as having no result", job.token, result.error_message)
            continue
        rec = records.get(result.custom_id)
        if rec is None:
            tally["unknown_custom_id"] += 1
            log.warning("job %s: result for unknown custom id %r ignored", job.token, result.custom_id)
            continue
        if result.custom_id in seen:
            tally["duplicate_result"] += 1
            log.warning("job %s: second result for %s ignored", job.token, result.custom_id)
            continue
        seen.add(result.custom_id)
        if rec.state != State.SUBMITTED:  # collected by an earlier attempt of this task
            tally["already_collected"] += 1
            continue
        line_cost = price.cost(result.input_tokens, result.output_tokens, discount)
        # a later attempt: a retry, or a rerun asked for by a backfill
        usage[rec.id] = LineUsage(result.input_tokens, result.output_tokens, line_cost, rec.attempts > 1)
        pending.append(_change_for(w, rec, result, validator, (rec.cost_usd or 0.0) + line_cost))
        if len(pending) >= 1000:
            flush()
    missing = [r for cid, r in records.items() if cid not in seen and r.state == State.SUBMITTED]
    pending.extend(_no_result(rec, info, len(records)) for rec in missing)
    flush()
    return dict(tally)


def _no_result(rec, info: JobInfo, job_size: int) -> Change:
    """The move of a record its job returned no line for: why depends on how the job ended. The
    one record of a job the provider refused as a whole is the request it refused: a person looks."""
    if info.status == JobStatus.FAILED and job_size == 1:
        message = f"the provider refused this record's request (job {info.provider_job_id}): {info.error or info.raw_status}"
        return Change(rec.id, State.REVIEW_REQUIRED, message[:2000], {
            "error_kind": str(ErrorKind.BAD_REQUEST), "error_message": message[:2000], "completed_at": utcnow()})
    kind = _MISSING_KIND[info.status]
    message = f"no result line for {rec.custom_id} in {info.raw_status} job {info.provider_job_id}" + (
        f": {info.error}" if info.error else "")
    return Change(rec.id, State.PROVIDER_ERROR, message[:2000], {
        "error_kind": str(kind), "error_message": message[:2000], "completed_at": utcnow()})


def review_reason(w: Workload, custom_id: str, output: dict[str, Any]) -> str | None:
    """Why a valid output must wait for a person (a review rule, or the random spot check), or ``None``."""
    for rule in w.spec.review.rules:
        why = rule.matches(output)
        if why:
            return f"review rule: {why}"
    rate = w.spec.review.sample_rate
    # reproducible per record and attempt: a re-collect picks the same records
    if rate and int(hashlib.sha256(f"spot-check:{custom_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < rate:
        return f"random spot check ({rate:.0%} of valid outputs)"
    return None


def _change_for(w: Workload, rec, result, validator: OutputValidator, total_cost: float) -> Change:
    usage = {"input_tokens": result.input_tokens, "output_tokens": result.output_tokens, "cost_usd": total_cost,
             "completed_at": utcnow()}
    if not result.answered:
        return Change(rec.id, State.PROVIDER_ERROR, result.error_message, {
            **usage, "error_kind": str(result.error_kind), "error_message": result.error_message,
        })
    if result.refusal:
        to = State.REVIEW_REQUIRED if w.spec.review.refusals else State.INVALID_OUTPUT
        return Change(rec.id, to, f"refused: {result.refusal}", {
            **usage, "output": None, "error_kind": str(ErrorKind.REFUSAL), "error_message": f"refused: {result.refusal}"[:2000],
            "validation_errors": ["refusal"],
        })
    verdict = validator.validate(result.output_text, rec.source_id, rec.input)
    if verdict.ok:
        why = verdict.review or review_reason(w, rec.custom_id, verdict.output)
        return Change(rec.id, State.REVIEW_REQUIRED if why else State.COMPLETED, why or "valid output", {
            **usage, "output": verdict.output, "validation_errors": None, "error_kind": None, "error_message": why,
        })
    errors = "; ".join(verdict.errors)[:2000]
    return Change(rec.id, State.INVALID_OUTPUT, errors, {
        **usage, "output": verdict.output if verdict.output is not None else {"raw": (result.output_text or "")[:5000]},
        "validation_errors": verdict.errors, "error_kind": str(ErrorKind.INVALID_OUTPUT), "error_message": errors,
    })
