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

from batch_ai.ledger.states import State
from batch_ai.ledger.store import Change, IntakeRow, Ledger, RecordKey, utcnow
from batch_ai.providers import BatchProvider
from batch_ai.providers.base import TRANSIENT_ERRORS, ErrorKind, JobExpectation, JobInfo, JobStatus, Prompt, RequestOptions, request_size
from batch_ai.providers.capabilities import capabilities
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


def content_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


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


def parse_row(w: Workload, number: int, line: str, where: str | None = None) -> IntakeRow:
    """Check one source line; a bad one becomes a dead letter that names the row and the problem."""
    src = w.spec.source

    def dead(reason: str, data: Any, known_id: str | None = None) -> IntakeRow:
        h = content_hash(data)
        who = (where or f"row {number}") + (f" ({src.id_field} {known_id})" if known_id else "")
        # keyed by content: a malformed row has no trustworthy id of its own
        return IntakeRow(number, f"!malformed-{h[:24]}", {"row": number, "raw": data}, h, f"{who}: {reason}")

    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return dead(f"not valid JSON ({exc.msg} at char {exc.pos})", line[:2000])
    if not isinstance(data, dict):
        return dead(f"a JSON {type(data).__name__}, not an object", data)
    raw_id = data.get(src.id_field)
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        return dead(f"no {src.id_field}", data)
    if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
        return dead(f"{src.id_field} must be a string or integer, got {type(raw_id).__name__}", data)
    source_id = str(raw_id).strip()
    if len(source_id) > 200:
        return dead(f"{src.id_field} is longer than 200 characters", data)
    for name in src.required_fields:
        value = data.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return dead(f"required field {name!r} is missing or empty", data, source_id)
    size = sum(len(v) for v in data.values() if isinstance(v, str))
    if size > src.max_text_chars:
        return dead(f"text is {size} characters, over the limit of {src.max_text_chars}", data, source_id)
    return IntakeRow(number, source_id, data, content_hash(data))


def read_source(w: Workload, run: RunInfo) -> tuple[list[IntakeRow], list[str]]:
    """Every row of the run's source file(s), numbered across files in date order."""
    from airflow.sdk import ObjectStoragePath

    nightly = run.params.date_from is None
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
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            for line_no, line in enumerate(fh, start=1):
                if line.strip():
                    # the file's name and line (the full URI is in the extract log)
                    row = parse_row(w, len(rows) + 1, line.rstrip("\n"), where=f"{path.name} line {line_no}")
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
    limits = capabilities().provider(w.spec.provider.name).limits
    sizes, tokens_in = [], 0
    for rec in queued:
        prompt = prompt_for(w, rec.input)
        sizes.append(request_size(adapter.build_request(_custom_id(rec.id, rec.attempts), prompt, options)))
        tokens_in += estimate_tokens(prompt.system) + estimate_tokens(prompt.user)
    mean_out = ledger.mean_output_tokens(w.name)
    per_record_out = mean_out if mean_out is not None else w.spec.provider.max_output_tokens
    tokens_out = round(per_record_out * len(queued))
    max_requests = min(filter(None, [limits.max_requests_per_job, w.spec.batching.max_requests_per_job]))
    max_bytes = min(filter(None, [limits.max_bytes_per_job, w.spec.batching.max_bytes_per_job]))
    caps = capabilities()
    pcaps = caps.provider(w.spec.provider.name)
    price = pcaps.price(w.spec.provider.model)
    discount, below = pcaps.batch_discount, None
    if queued and len(queued) < limits.min_requests_per_job:  # as plan() would do
        below = f"{len(queued)} record(s), fewer than the {limits.min_requests_per_job} a {w.spec.provider.name} job needs: "
        if w.spec.provider.below_minimum == "hold":
            below += "held for a later run"
            queued, tokens_in, tokens_out = [], 0, 0
        else:
            below += "real-time calls at the full price"
            discount = 1.0
        jobs = 0
    else:
        jobs = len(split_into_jobs(sizes, max_requests, max_bytes, limits.min_requests_per_job)) if queued else 0
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
    validator = OutputValidator(w.output_schema, w.spec.validation)
    options = request_options(w)
    tally: Counter = Counter()
    tokens_in = tokens_out = 0
    for rec in picked:
        result = adapter.realtime(f"sample-{rec.id}", prompt_for(w, rec.input), options)
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


def plan(w: Workload, ledger: Ledger, adapter: BatchProvider, run: RunInfo, round_no: int = 0) -> list[str]:
    """Split queued records into provider jobs within the limits; write each job's intent.

    Returns the submission tokens of this run's batch jobs not collected yet (a re-run of the
    task returns the same ones; a retry round gets only its own). Too few records for the
    provider's minimum job size are held for a later run or sent through real-time calls, as
    the workload's ``below_minimum`` says.
    """
    key = record_key(w)
    limits = capabilities().provider(w.spec.provider.name).limits
    max_requests = min(filter(None, [limits.max_requests_per_job, w.spec.batching.max_requests_per_job]))
    max_bytes = min(filter(None, [limits.max_bytes_per_job, w.spec.batching.max_bytes_per_job]))
    options = request_options(w)
    first = len(ledger.planned_tokens(w.name, run.run_id)) + 1
    outcome: dict[str, Any] = {}

    def make_jobs(records) -> list[tuple[str, list[int]]]:
        outcome["records"] = len(records)
        if not records:
            return []
        sizes = []
        for rec in records:
            size = request_size(adapter.build_request(_custom_id(rec.id, rec.attempts), prompt_for(w, rec.input), options))
            if size > max_bytes:
                raise StageError(f"record {rec.id} ({rec.source_id}) alone is {size} bytes, over the job limit {max_bytes}")
            sizes.append(size)
        if len(records) < limits.min_requests_per_job:
            outcome["below"] = (f"{len(records)} queued record(s) are fewer than the {limits.min_requests_per_job} "
                                f"{w.spec.provider.name} needs for a batch job")
            if w.spec.provider.below_minimum == "hold":
                return []
            outcome["realtime"] = _token(w, run, first)
            return [(outcome["realtime"], [r.id for r in records])]
        groups = split_into_jobs(sizes, max_requests, max_bytes, limits.min_requests_per_job)
        outcome["jobs"] = len(groups)
        return [(_token(w, run, n), [records[i].id for i in g]) for n, g in enumerate(groups, start=first)]

    for token, size in ledger.plan_jobs(key, w.spec.provider.name, run.run_id, make_jobs, limit=run.params.record_limit,
                                        details={"round": round_no}):
        log.info("planned job %s with %d records", token, size)
    if "realtime" in outcome:
        log.warning("%s: sending them through real-time calls (provider.below_minimum: realtime)", outcome["below"])
        run_realtime(w, ledger, adapter, outcome["realtime"], run)
    elif "below" in outcome:
        log.warning("%s: holding them for a later run (provider.below_minimum: hold)", outcome["below"])
        ledger.set_run_detail(w.name, run.run_id, "held", {"records": outcome["records"], "reason": outcome["below"]})
    else:
        log.info("plan %s: %d queued records in %d job(s) (limits: %d requests, %d bytes, at least %d)", w.name,
                 outcome["records"], outcome.get("jobs", 0), max_requests, max_bytes, limits.min_requests_per_job)
    return ledger.planned_tokens(w.name, run.run_id, open_only=True)


def _custom_id(record_id: int, attempts: int) -> str:
    return f"r{record_id}-a{attempts + 1}"


def submit(w: Workload, ledger: Ledger, adapter: BatchProvider, token: str, run: RunInfo) -> str | None:
    """Create the provider job for a planned token, or re-attach to the one already created."""
    job = ledger.job(token)
    if job.provider_job_id:
        log.info("job %s was already submitted as %s; re-attaching", token, job.provider_job_id)
        return job.provider_job_id
    records = ledger.job_records(job.id, State.QUEUED)
    if not records:
        ledger.update_job(job.id, status="empty", ended_at=utcnow())
        log.info("job %s has no queued records left; nothing to submit", token)
        return None
    custom_ids = {rec.id: _custom_id(rec.id, rec.attempts) for rec in records}
    expected = JobExpectation(
        custom_ids=tuple(custom_ids.values()),
        not_before=job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=timezone.utc),
        claimed=frozenset(ledger.provider_job_ids(w.spec.provider.name)),
    )
    found = adapter.find_job(token, expected)
    if found is not None:
        log.warning(
            "found provider job %s created earlier for %s (the ledger had not recorded it); using it, not creating another",
            found.provider_job_id,
            token,
        )
        info = found
    else:
        options = request_options(w)
        requests = [adapter.build_request(custom_ids[rec.id], prompt_for(w, rec.input), options) for rec in records]
        info = adapter.submit(requests, token, model=w.spec.provider.model,
                              labels={"batch_ai_workload": w.name, "batch_ai_run": run.run_id[:200]})
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
    """Stream a finished job's results, validate each, and move every record of the job on."""
    job = ledger.job(token)
    if not job.provider_job_id:
        return {"token": token, "skipped": "never submitted"}
    if (job.details or {}).get("deadline_fallback"):
        # answered by real-time calls after the deadline; what they did not answer (an
        # interrupted fallback) is a transient error the next run retries
        left = ledger.job_records(job.id, State.SUBMITTED)
        reason = f"job {job.provider_job_id} was cancelled at the deadline and no real-time answer was saved"
        ledger.transition([Change(r.id, State.PROVIDER_ERROR, reason, {"error_kind": str(ErrorKind.CANCELLED),
                                                                      "error_message": reason}) for r in left],
                          actor=ACTOR, run_id=run.run_id, job_id=job.id)
        return {"token": token, "skipped": "answered by real-time calls after the deadline", "unanswered": len(left)}
    info = adapter.get_job(job.provider_job_id)
    if not info.terminal:
        raise StageError(f"job {token} ({info.provider_job_id}) is still {info.raw_status}; collect runs after the wait")
    pcaps = capabilities().provider(w.spec.provider.name)
    summary = _apply_results(w, ledger, job, adapter.iter_results(info), info, run, discount=pcaps.batch_discount)
    if w.spec.provider.delete_files_after_collect:
        adapter.cleanup(info)
    summary = {"token": token, "provider_job_id": info.provider_job_id, "status": str(info.status), **summary}
    log.info("collect %s: %s", token, json.dumps(summary))
    return summary


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
    after = ledger.job(token)
    paid = (after.cost_usd or 0.0) - before
    ledger.update_job(job.id, status="cancelled" if cancelled else after.status,
                      details={**(after.details or {}), "realtime_cost_usd": paid})
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
    ledger.mark_submitted(job.id, f"realtime:{token}", {"kind": "realtime"}, custom_ids, run.run_id, ACTOR)
    # a call that fails ends the series; the records not reached become provider_error
    results = _RealtimeCalls(w, adapter, records, custom_ids)
    info = JobInfo(f"realtime:{token}", JobStatus.COMPLETED, "realtime", {"total": len(records)})
    summary = _apply_results(w, ledger, ledger.job(token), results, info, run, discount=1.0)
    log.info("real-time %s: %s", token, json.dumps(summary))
    return summary


def _apply_results(w: Workload, ledger: Ledger, job, results, info: JobInfo, run: RunInfo, *, discount: float) -> dict[str, Any]:
    """Validate each result, move its record on, and give every record without one its reason."""
    records = {r.custom_id: r for r in ledger.job_records(job.id)}
    validator = OutputValidator(w.output_schema, w.spec.validation)
    price = capabilities().provider(w.spec.provider.name).price(w.spec.provider.model)
    tally: Counter = Counter()
    seen: set[str] = set()
    pending: list[Change] = []
    tokens_in = tokens_out = 0
    cost = repeat_cost = 0.0

    def flush() -> None:
        ledger.transition(pending, actor=ACTOR, run_id=run.run_id, job_id=job.id)
        pending.clear()

    for result in results:
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
        tokens_in += result.input_tokens
        tokens_out += result.output_tokens
        line_cost = price.cost(result.input_tokens, result.output_tokens, discount)
        cost += line_cost
        if rec.attempts > 1:  # a retry, or a rerun asked for by a backfill
            repeat_cost += line_cost
        change = _change_for(w, rec, result, validator, (rec.cost_usd or 0.0) + line_cost)
        tally[str(change.to)] += 1
        pending.append(change)
        if len(pending) >= 1000:
            flush()
    kind = _MISSING_KIND[info.status]
    missing = [r for cid, r in records.items() if cid not in seen and r.state == State.SUBMITTED]
    for rec in missing:
        message = f"no result line for {rec.custom_id} in {info.raw_status} job {info.provider_job_id}" + (
            f": {info.error}" if info.error else ""
        )
        pending.append(Change(rec.id, State.PROVIDER_ERROR, message, {
            "error_kind": str(kind), "error_message": message[:2000], "completed_at": utcnow(),
        }))
    if missing:
        tally[f"missing:{kind}"] += len(missing)
        tally[str(State.PROVIDER_ERROR)] += len(missing)
    flush()
    details = job.details or {}
    ledger.add_job_usage(job.id, status=str(info.status),
                         details={**details, **info.details, "counts": info.counts, "error": info.error,
                                  "repeat_cost_usd": details.get("repeat_cost_usd", 0.0) + repeat_cost},
                         input_tokens=tokens_in, output_tokens=tokens_out, cost_usd=cost)
    return dict(tally)


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
        why = review_reason(w, rec.custom_id, verdict.output)
        return Change(rec.id, State.REVIEW_REQUIRED if why else State.COMPLETED, why or "valid output", {
            **usage, "output": verdict.output, "validation_errors": None, "error_kind": None, "error_message": why,
        })
    errors = "; ".join(verdict.errors)[:2000]
    return Change(rec.id, State.INVALID_OUTPUT, errors, {
        **usage, "output": verdict.output if verdict.output is not None else {"raw": (result.output_text or "")[:5000]},
        "validation_errors": verdict.errors, "error_kind": str(ErrorKind.INVALID_OUTPUT), "error_message": errors,
    })
