"""The ledger: every record, job and state change of every workload.

All writes are bulk statements (``executemany`` / multi-row inserts) inside one
transaction per operation; state changes go through :func:`states.check_transitions`
and leave one audit row each.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, func, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from batch_ai.ledger import tables as t
from batch_ai.ledger.engine import ledger_url, make_engine
from batch_ai.ledger.states import REQUEUE_ON_CHANGE, IllegalTransition, State, check_transitions

log = logging.getLogger(__name__)

CHUNK = 1000  # ids per IN (...) clause / rows per executemany


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def chunks(items: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass(frozen=True)
class RecordKey:
    """The version part of a record's idempotency key (the rest is its source id)."""

    workload: str
    prompt_version: str
    model: str
    schema_version: str

    def where(self):
        c = t.records.c
        return and_(
            c.workload == self.workload,
            c.prompt_version == self.prompt_version,
            c.model == self.model,
            c.schema_version == self.schema_version,
        )


@dataclass
class IntakeRow:
    """One row read from the source, already checked by the extractor."""

    row_number: int
    source_id: str  # the row's id, or a key made from its content when it has none
    data: Any
    content_hash: str
    malformed: str | None = None  # why the row cannot be sent to a model
    source_date: date | None = None  # the day of the source file it was read from


@dataclass
class Change:
    """A state change of one record, with the columns that change along with it."""

    record_id: int
    to: State
    reason: str | None = None
    values: dict[str, Any] = field(default_factory=dict)


class Ledger:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"

    @classmethod
    def connect(cls, url=None) -> Ledger:
        ledger = cls(make_engine(url or ledger_url()))
        ledger.create(t.metadata)
        return ledger

    def create(self, what) -> None:
        """Create missing tables (a ``MetaData`` or one ``Table``). On PostgreSQL under an
        advisory lock: two runs starting at once on a new database must not both create them."""
        with self.engine.begin() as conn:
            if self.is_postgres:
                conn.execute(text("select pg_advisory_xact_lock(hashtext('batch_ai.create_tables'))"))
            what.create(conn, checkfirst=True) if isinstance(what, t.Table) else what.create_all(conn)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- state changes -------------------------------------------------------------------

    def apply(
        self,
        conn: Connection,
        changes: Sequence[Change],
        *,
        actor: str,
        run_id: str | None = None,
        job_id: int | None = None,
        expect_from: State | None = None,
    ) -> None:
        """Apply state changes in bulk inside ``conn``'s transaction, with audit rows.

        ``expect_from``: every record must be in that state now (checked under the row lock),
        for a decision taken on what a person saw."""
        if not changes:
            return
        ids = [c.record_id for c in changes]
        if len(set(ids)) != len(ids):
            dupes = [i for i, n in Counter(ids).items() if n > 1]
            raise ValueError(f"records changed twice in one operation: {dupes[:10]}")
        current: dict[int, Any] = {}
        for chunk in chunks(ids):
            q = select(t.records.c.id, t.records.c.state, t.records.c.attempts).where(t.records.c.id.in_(chunk))
            if self.is_postgres:
                q = q.with_for_update()
            current.update({row.id: row for row in conn.execute(q)})
        missing = [i for i in ids if i not in current]
        if missing:
            raise KeyError(f"unknown record ids: {missing[:10]}")
        if expect_from is not None:
            moved = [f"record {i} is {current[i].state}" for i in ids if current[i].state != expect_from]
            if moved:
                raise IllegalTransition(f"expected {expect_from}: {'; '.join(moved[:10])}")
        check_transitions((c.record_id, current[c.record_id].state, c.to) for c in changes)

        now = utcnow()
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for c in changes:
            cols = tuple(sorted(c.values))
            params = {f"p_{k}": v for k, v in c.values.items()}
            params.update(p_id=c.record_id, p_state=str(c.to))
            by_columns.setdefault(cols, []).append(params)
        for cols, params in by_columns.items():
            stmt = (
                update(t.records)
                .where(t.records.c.id == bindparam("p_id"))
                .values(state=bindparam("p_state"), updated_at=now, **{k: bindparam(f"p_{k}") for k in cols})
            )
            for part in chunks(params):
                conn.execute(stmt, list(part))
        audit_rows = [
            {
                "record_id": c.record_id,
                "from_state": current[c.record_id].state,
                "to_state": str(c.to),
                "at": now,
                "actor": actor,
                "run_id": run_id,
                "job_id": job_id,
                "attempt": c.values.get("attempts", current[c.record_id].attempts),
                "reason": c.reason,
            }
            for c in changes
        ]
        for part in chunks(audit_rows):
            conn.execute(insert(t.audit), list(part))

    def transition(self, changes: Sequence[Change], **kwargs) -> None:
        with self.engine.begin() as conn:
            self.apply(conn, changes, **kwargs)

    def move(self, key: RecordKey, state: State, decide: Callable[[Any], Change | None], **kwargs) -> list[Change]:
        """Change records now in ``state`` as ``decide(record)`` says (``None``: leave it).

        Reads and changes in one transaction; on PostgreSQL rows another run is changing are
        skipped, so two runs never move the same record twice.
        """
        q = select(t.records).where(key.where(), t.records.c.state == state).order_by(t.records.c.id)
        if self.is_postgres:
            q = q.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            changes = [c for c in map(decide, conn.execute(q)) if c is not None]
            self.apply(conn, changes, **kwargs)
        return changes

    # -- artifacts -----------------------------------------------------------------------

    def check_artifact_versions(self, workload: str, artifacts: Iterable[tuple[str, str, str, str]]) -> None:
        """Remember the content hash of each (kind, version); fail if a version's content changed.

        ``artifacts`` holds ``(kind, version, sha256, path)``.
        """
        av = t.artifact_versions
        with self.engine.begin() as conn:
            for kind, version, sha, path in artifacts:
                # first use records the hash (a run starting at the same moment may record it too)
                conn.execute(
                    (postgresql.insert if self.is_postgres else sqlite.insert)(av)
                    .values(workload=workload, kind=kind, version=version, sha256=sha, path=path, first_seen_at=utcnow())
                    .on_conflict_do_nothing()
                )
                known = conn.execute(
                    select(av.c.sha256, av.c.first_seen_at).where(
                        av.c.workload == workload, av.c.kind == kind, av.c.version == version
                    )
                ).one()
                if known.sha256 != sha:
                    raise ValueError(
                        f"{kind} file {path} changed since version {version!r} was first used by workload "
                        f"{workload!r} (on {known.first_seen_at:%Y-%m-%d}). Records already made under "
                        f"{version!r} used the old text, so the version must change with it: bump the "
                        f"{kind} version in the workload YAML (and keep the old file for history)."
                    )

    # -- runs ----------------------------------------------------------------------------

    def start_run(self, workload: str, run_id: str, interval_start=None, interval_end=None) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(t.runs.c.id).where(t.runs.c.workload == workload, t.runs.c.run_id == run_id)
            ).first()
            if exists is None:
                conn.execute(
                    insert(t.runs).values(
                        workload=workload,
                        run_id=run_id,
                        interval_start=interval_start,
                        interval_end=interval_end,
                        started_at=utcnow(),
                    )
                )
            else:  # extract again (a cleared run): the run starts over
                conn.execute(update(t.runs).where(t.runs.c.id == exists.id).values(started_at=utcnow()))

    def set_extracted(self, workload: str, run_id: str, count: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(t.runs).where(t.runs.c.workload == workload, t.runs.c.run_id == run_id).values(extracted=count)
            )

    def set_run_detail(self, workload: str, run_id: str, name: str, value: Any) -> None:
        rc = t.runs.c
        with self.engine.begin() as conn:
            q = select(rc.details).where(rc.workload == workload, rc.run_id == run_id)
            if self.is_postgres:
                q = q.with_for_update()
            details = dict(conn.scalar(q) or {})
            details[name] = value
            conn.execute(update(t.runs).where(rc.workload == workload, rc.run_id == run_id).values(details=details))

    def run_details(self, workload: str, run_id: str) -> dict[str, Any]:
        rc = t.runs.c
        with self.engine.connect() as conn:
            return dict(conn.scalar(select(rc.details).where(rc.workload == workload, rc.run_id == run_id)) or {})

    def finish_run(self, workload: str, run_id: str, report: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(t.runs)
                .where(t.runs.c.workload == workload, t.runs.c.run_id == run_id)
                .values(finished_at=utcnow(), report=report)
            )

    def latest_report(self, workload: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.runs.c.report)
                .where(t.runs.c.workload == workload, t.runs.c.report.is_not(None))
                .order_by(t.runs.c.finished_at.desc())
                .limit(1)
            ).first()
        return row.report if row else None

    # -- intake --------------------------------------------------------------------------

    def intake(
        self,
        key: RecordKey,
        provider: str,
        run_id: str,
        rows: Sequence[IntakeRow],
        *,
        actor: str,
        rerun: Iterable[State] = (),
        conn: Connection | None = None,
        version_override: bool = False,
    ) -> Counter:
        """Account for every source row of a run and upsert the records they make.

        Returns how the rows were disposed of: ``new``, ``requeued``, ``unchanged``,
        ``changed_in_flight``, ``duplicate`` and ``dead_letter`` (the latter also counted
        once more as ``new`` or ``unchanged``); for a backfill (``rerun``: the record states to
        send round again) also ``rerun``, ``not_selected`` and ``invalid_same_version``.

        A backfill with another prompt or schema version than a record's moves that record to
        the new version when its state is selected, instead of making a second record; a
        record it does not select stays as it is. Runs inside ``conn``'s transaction if given
        (a dry run rolls it back).
        """
        args = (key, provider, run_id, rows, actor, frozenset(map(State, rerun)), version_override)
        if conn is None:
            with self.engine.begin() as conn:
                return self._intake(conn, *args)
        return self._intake(conn, *args)

    def _lock(self, q):
        return q.with_for_update() if self.is_postgres else q

    def _intake(self, conn, key, provider, run_id, rows, actor, rerun: frozenset[State], version_override: bool) -> Counter:
        outcome: Counter = Counter()
        # Within one read, the last row for an id wins (daily exports append newer versions).
        last_row: dict[str, IntakeRow] = {}
        for row in rows:
            last_row[row.source_id] = row
        winners = list(last_row.values())
        rerun = rerun & REQUEUE_ON_CHANGE
        rc = t.records.c
        now = utcnow()

        def lookup(source_ids, where) -> dict[str, Any]:
            found: dict[str, Any] = {}
            for chunk in chunks(list(source_ids)):
                q = select(rc.id, rc.source_id, rc.state, rc.content_hash).where(where, rc.source_id.in_(chunk))
                found.update({r.source_id: r for r in conn.execute(self._lock(q.order_by(rc.id)))})
            return found  # the newest record of a source id wins

        existing = lookup([r.source_id for r in winners], key.where())
        # a backfill finds the records of other prompt/schema versions of the same model
        other_versions = lookup(
            [r.source_id for r in winners if r.source_id not in existing],
            and_(rc.workload == key.workload, rc.model == key.model),
        ) if rerun or version_override else {}

        new_rows = [r for r in winners if r.source_id not in existing and r.source_id not in other_versions]
        inserted: dict[str, int] = {}
        for part in chunks(new_rows):
            stmt = (postgresql.insert if self.is_postgres else sqlite.insert)(t.records).values([
                {
                    "workload": key.workload,
                    "source_id": r.source_id,
                    "prompt_version": key.prompt_version,
                    "model": key.model,
                    "schema_version": key.schema_version,
                    "content_hash": r.content_hash,
                    "state": str(State.DEAD_LETTER if r.malformed else State.QUEUED),
                    "input": r.data,
                    "provider": provider,
                    "attempts": 0,
                    "error_kind": "malformed_input" if r.malformed else None,
                    "error_message": r.malformed,
                    "last_run_id": run_id,
                    "source_date": r.source_date,
                    "created_at": now,
                    "updated_at": now,
                }
                for r in part
            ])
            # a concurrent run (a backfill beside the nightly) may have inserted some already
            stmt = stmt.on_conflict_do_nothing(index_elements=["workload", "source_id", "prompt_version", "model", "schema_version"])
            inserted.update({r.source_id: r.id for r in conn.execute(stmt.returning(rc.id, rc.source_id))})
        raced = [r for r in new_rows if r.source_id not in inserted]
        if raced:
            existing.update(lookup([r.source_id for r in raced], key.where()))
            new_rows = [r for r in new_rows if r.source_id in inserted]
        audit_rows = [
            {
                "record_id": inserted[r.source_id],
                "from_state": None,
                "to_state": str(State.DEAD_LETTER if r.malformed else State.QUEUED),
                "at": now,
                "actor": actor,
                "run_id": run_id,
                "attempt": 0,
                "reason": r.malformed or "extracted",
            }
            for r in new_rows
        ]
        for part in chunks(audit_rows):
            conn.execute(insert(t.audit), list(part))
        outcome["new"] = len(new_rows)
        outcome["dead_letter"] = sum(1 for r in winners if r.malformed)
        ids: dict[str, int] = {**inserted, **{sid: r.id for sid, r in existing.items()},
                               **{sid: r.id for sid, r in other_versions.items()}}

        def fresh(r: IntakeRow, **more) -> dict[str, Any]:
            return {"input": r.data, "content_hash": r.content_hash, "output": None, "error_kind": None,
                    "error_message": None, "validation_errors": None, "last_run_id": run_id,
                    "source_date": r.source_date, **more}

        requeue: list[Change] = []
        refresh: list[dict[str, Any]] = []
        for r in winners:
            old = existing.get(r.source_id)
            if old is None:
                other = other_versions.get(r.source_id)
                if other is None:
                    continue
                if State(other.state) in rerun:
                    requeue.append(Change(other.id, State.QUEUED, (
                        f"backfill: rerun of {other.state} with prompt {key.prompt_version}, schema {key.schema_version}"),
                        fresh(r, prompt_version=key.prompt_version, schema_version=key.schema_version)))
                    outcome["rerun"] += 1
                else:
                    outcome["not_selected"] += 1
                continue
            if old.content_hash == r.content_hash:
                if State(old.state) not in rerun:
                    outcome["unchanged"] += 1
                elif old.state == State.INVALID_OUTPUT:
                    # the same prompt and schema would fail the same way
                    outcome["invalid_same_version"] += 1
                else:
                    requeue.append(Change(old.id, State.QUEUED, f"backfill: rerun of {old.state}", fresh(r)))
                    outcome["rerun"] += 1
            elif old.state == State.QUEUED:
                refresh.append({"p_id": old.id, "p_input": r.data, "p_hash": r.content_hash, "p_date": r.source_date})
                outcome["requeued"] += 1
            elif old.state in REQUEUE_ON_CHANGE:
                requeue.append(Change(old.id, State.QUEUED, "source content changed", fresh(r)))
                outcome["requeued"] += 1
            else:  # submitted: the job in flight answers for the old content
                log.warning(
                    "record %s (source id %s) changed while %s; the new content is taken on the next run",
                    old.id,
                    r.source_id,
                    old.state,
                )
                outcome["changed_in_flight"] += 1
        if refresh:
            conn.execute(
                update(t.records)
                .where(rc.id == bindparam("p_id"))
                .values(input=bindparam("p_input"), content_hash=bindparam("p_hash"),
                        source_date=bindparam("p_date"), updated_at=now),
                refresh,
            )
        self.apply(conn, requeue, actor=actor, run_id=run_id)

        winner_rows = {id(r) for r in winners}
        intake_rows = []
        for row in rows:
            is_winner = id(row) in winner_rows
            if not is_winner:
                later = last_row[row.source_id]
                same = later.content_hash == row.content_hash
                reason = f"{'duplicate of' if same else 'superseded by'} row {later.row_number}"
                outcome["duplicate"] += 1
            intake_rows.append(
                {
                    "workload": key.workload,
                    "run_id": run_id,
                    "row_number": row.row_number,
                    "source_id": row.source_id,
                    "record_id": ids[row.source_id],
                    "disposition": "record" if is_winner else "duplicate",
                    "reason": row.malformed if is_winner else reason,
                }
            )
        # A re-run of the same extract task replaces its own accounting.
        conn.execute(t.intake.delete().where(t.intake.c.workload == key.workload, t.intake.c.run_id == run_id))
        for part in chunks(intake_rows):
            conn.execute(insert(t.intake), list(part))
        return outcome

    # -- jobs ----------------------------------------------------------------------------

    #: A job planned this long ago and never submitted (its run died) gives its records up.
    STALE_PLAN = timedelta(hours=6)

    def plan_jobs(
        self,
        key: RecordKey,
        provider: str,
        run_id: str,
        make_jobs: Callable[[list[Any]], list[tuple[str, list[int]]]],
        *,
        limit: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> list[tuple[str, int]]:
        """Claim the queued records no live run has planned, and write the jobs ``make_jobs``
        groups them into (status ``planned``), before any paid call. Returns (token, size) pairs.

        On PostgreSQL the claim locks the rows and skips those another run is claiming, so a
        nightly run and a backfill over the same records never plan (and pay for) one twice.
        ``limit`` caps the records this run submits, retries of its own records not counted.
        """
        rc, jc, ac = t.records.c, t.jobs.c, t.audit.c
        now = utcnow()
        taken = select(jc.id).where(jc.status == "planned", or_(jc.run_id == run_id, jc.created_at > now - self.STALE_PLAN))
        q = (
            select(rc.id, rc.source_id, rc.input, rc.attempts)
            .where(key.where(), rc.state == State.QUEUED)
            .where(or_(rc.job_id.is_(None), rc.job_id.not_in(taken)))
            .order_by(rc.id)
        )
        if self.is_postgres:
            q = q.with_for_update(skip_locked=True, of=t.records)
        with self.engine.begin() as conn:
            records = list(conn.execute(q))
            if limit is not None:
                in_run = set(conn.scalars(select(ac.record_id).distinct().where(ac.run_id == run_id, ac.to_state == State.SUBMITTED)))
                room = max(0, limit - len(in_run))
                retries = [r for r in records if r.id in in_run]
                others = [r for r in records if r.id not in in_run][:room]
                records = sorted(retries + others, key=lambda r: r.id)
            planned = []
            for token, record_ids in make_jobs(records):
                job_id = conn.execute(
                    insert(t.jobs)
                    .values(token=token, workload=key.workload, run_id=run_id, provider=provider, model=key.model,
                            status="planned", record_count=len(record_ids), created_at=now, details=details)
                    .returning(jc.id)
                ).scalar_one()
                for chunk in chunks(list(record_ids)):
                    conn.execute(update(t.records).where(rc.id.in_(chunk), rc.state == State.QUEUED).values(job_id=job_id))
                planned.append((token, len(record_ids)))
        return planned

    def planned_tokens(self, workload: str, run_id: str, *, open_only: bool = False) -> list[str]:
        """Tokens of the run's jobs; ``open_only``: batch jobs not yet collected (planned or submitted)."""
        jc = t.jobs.c
        q = select(jc.token).where(jc.workload == workload, jc.run_id == run_id).order_by(jc.id)
        if open_only:
            q = q.where(jc.status.in_(["planned", "submitted"]))
        with self.engine.connect() as conn:
            return list(conn.scalars(q))

    def provider_job_ids(self, provider: str) -> list[str]:
        """Every provider job id the ledger holds for a provider."""
        jc = t.jobs.c
        with self.engine.connect() as conn:
            return list(conn.scalars(select(jc.provider_job_id).where(jc.provider == provider, jc.provider_job_id.is_not(None))))

    def job(self, token: str) -> Any:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.jobs).where(t.jobs.c.token == token)).first()
        if row is None:
            raise KeyError(f"no job with token {token!r} in the ledger")
        return row

    def job_records(self, job_id: int, state: State | None = None) -> list[Any]:
        rc = t.records.c
        q = select(rc.id, rc.source_id, rc.input, rc.attempts, rc.custom_id, rc.state, rc.cost_usd).where(rc.job_id == job_id)
        if state is not None:
            q = q.where(rc.state == state)
        with self.engine.connect() as conn:
            return list(conn.execute(q.order_by(rc.id)))

    def update_job(self, job_id: int, **values) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(**values))

    def add_job_usage(self, job_id: int, *, status: str, details: dict, input_tokens: int, output_tokens: int, cost_usd: float) -> None:
        """Record a collected job's end and add this collection's usage to its totals."""
        jc = t.jobs.c
        with self.engine.begin() as conn:
            conn.execute(
                update(t.jobs)
                .where(jc.id == job_id)
                .values(
                    status=status,
                    details=details,
                    ended_at=func.coalesce(jc.ended_at, utcnow()),
                    input_tokens=func.coalesce(jc.input_tokens, 0) + input_tokens,
                    output_tokens=func.coalesce(jc.output_tokens, 0) + output_tokens,
                    cost_usd=func.coalesce(jc.cost_usd, 0.0) + cost_usd,
                )
            )

    def mark_submitted(
        self, job_id: int, provider_job_id: str, details: dict, custom_ids: dict[int, str], run_id: str, actor: str
    ) -> None:
        """Record the provider's job id and move the job's queued records to ``submitted``."""
        now = utcnow()
        with self.engine.begin() as conn:
            planned = conn.scalar(select(t.jobs.c.details).where(t.jobs.c.id == job_id)) or {}
            conn.execute(
                update(t.jobs)
                .where(t.jobs.c.id == job_id)
                .values(provider_job_id=provider_job_id, status="submitted", submitted_at=now, details={**planned, **details})
            )
            attempts = dict(
                conn.execute(
                    select(t.records.c.id, t.records.c.attempts).where(t.records.c.id.in_(list(custom_ids)))
                ).all()
            )
            self.apply(
                conn,
                [
                    Change(
                        rid,
                        State.SUBMITTED,
                        f"in provider job {provider_job_id}",
                        {"custom_id": cid, "attempts": attempts[rid] + 1, "submitted_at": now},
                    )
                    for rid, cid in custom_ids.items()
                ],
                actor=actor,
                run_id=run_id,
                job_id=job_id,
            )

    # -- reading -------------------------------------------------------------------------

    def records_in_state(self, key: RecordKey, state: State) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(t.records).where(key.where(), t.records.c.state == state)))

    def lock_ready(self, conn: Connection, key: RecordKey, only: Sequence[int] | None = None) -> list[Any]:
        """The ``completed`` records of a key (of ``only``, the ones the quality gate checked,
        when given), for a publish inside ``conn``'s transaction. On PostgreSQL they are locked,
        skipping those a concurrent publish holds."""
        rc = t.records.c
        q = select(rc.id, rc.source_id, rc.output, rc.source_date).where(key.where(), rc.state == State.COMPLETED).order_by(rc.id)
        if self.is_postgres:
            q = q.with_for_update(skip_locked=True)
        rows = list(conn.execute(q))
        if only is None:
            return rows
        wanted = set(only)
        return [r for r in rows if r.id in wanted]

    def record(self, record_id: int) -> Any:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.records).where(t.records.c.id == record_id)).first()
        if row is None:
            raise KeyError(f"no record {record_id} in the ledger")
        return row

    def find_records(self, workload: str, source_id: str) -> list[Any]:
        """Every record (all versions) of one source id, oldest first."""
        rc = t.records.c
        with self.engine.connect() as conn:
            return list(conn.execute(select(t.records).where(rc.workload == workload, rc.source_id == source_id).order_by(rc.id)))

    def review_queue(self, workload: str | None = None, limit: int = 200) -> list[Any]:
        rc = t.records.c
        q = select(t.records).where(rc.state == State.REVIEW_REQUIRED).order_by(rc.workload, rc.id).limit(limit)
        if workload:
            q = q.where(rc.workload == workload)
        with self.engine.connect() as conn:
            return list(conn.execute(q))

    def review_counts(self) -> dict[str, int]:
        rc = t.records.c
        with self.engine.connect() as conn:
            return dict(conn.execute(select(rc.workload, func.count()).where(rc.state == State.REVIEW_REQUIRED)
                                     .group_by(rc.workload).order_by(rc.workload)).all())

    def history(self, record_id: int) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(t.audit).where(t.audit.c.record_id == record_id).order_by(t.audit.c.id)))

    def run_accounting(self, workload: str, run_id: str) -> dict[str, Any]:
        """How every row the run extracted ends up: counts per record state plus duplicates."""
        ic, rc = t.intake.c, t.records.c
        with self.engine.connect() as conn:
            extracted = conn.scalar(
                select(t.runs.c.extracted).where(t.runs.c.workload == workload, t.runs.c.run_id == run_id)
            )
            by_state = dict(
                conn.execute(
                    select(rc.state, func.count())
                    .select_from(t.intake.join(t.records, ic.record_id == rc.id))
                    .where(ic.workload == workload, ic.run_id == run_id, ic.disposition == "record")
                    .group_by(rc.state)
                ).all()
            )
            duplicates = conn.scalar(
                select(func.count())
                .select_from(t.intake)
                .where(ic.workload == workload, ic.run_id == run_id, ic.disposition == "duplicate")
            )
            errors = dict(
                conn.execute(
                    select(rc.error_kind, func.count())
                    .select_from(t.intake.join(t.records, ic.record_id == rc.id))
                    .where(ic.workload == workload, ic.run_id == run_id, ic.disposition == "record")
                    .where(rc.error_kind.is_not(None))
                    .group_by(rc.error_kind)
                ).all()
            )
            retried = conn.scalar(
                select(func.count())
                .select_from(t.intake.join(t.records, ic.record_id == rc.id))
                .where(ic.workload == workload, ic.run_id == run_id, ic.disposition == "record", rc.attempts > 1)
            )
        states = {str(s): by_state.pop(str(s), 0) for s in State}
        states["duplicate"] = duplicates
        # a state this module does not know would be a bug: show it rather than hide it
        states.update({f"unknown:{s}": n for s, n in by_state.items()})
        extracted = extracted or 0
        return {
            "extracted": extracted,
            "states": states,
            "lost": extracted - sum(states.values()),
            "error_kinds": errors,
            "retried": retried,
        }

    def run_records(self, workload: str, run_id: str) -> list[Any]:
        """The records a run's rows made (duplicates counted once), in row order."""
        ic = t.intake.c
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(t.records).select_from(t.intake.join(t.records, ic.record_id == t.records.c.id))
                .where(ic.workload == workload, ic.run_id == run_id, ic.disposition == "record").order_by(ic.row_number)
            ))

    def run_examples(self, workload: str, run_id: str, states: Sequence[State], per_state: int = 3) -> dict[str, list[dict]]:
        """A few records of the run in each of ``states``, with why they are there."""
        ic, rc = t.intake.c, t.records.c
        out: dict[str, list[dict]] = {}
        with self.engine.connect() as conn:
            for state in states:
                rows = conn.execute(
                    select(rc.source_id, rc.error_message)
                    .select_from(t.intake.join(t.records, ic.record_id == rc.id))
                    .where(ic.workload == workload, ic.run_id == run_id, ic.disposition == "record", rc.state == state)
                    .order_by(rc.id)
                    .limit(per_state)
                ).all()
                if rows:
                    out[str(state)] = [{"source_id": r.source_id, "reason": r.error_message} for r in rows]
        return out

    def mean_output_tokens(self, workload: str) -> float | None:
        """Mean output tokens of the workload's answered records (``None`` before the first)."""
        rc = t.records.c
        with self.engine.connect() as conn:
            value = conn.scalar(select(func.avg(rc.output_tokens)).where(rc.workload == workload, rc.output_tokens > 0))
        return float(value) if value is not None else None

    def jobs_by_id(self, ids) -> list[Any]:
        ids = list(ids)
        out: list[Any] = []
        with self.engine.connect() as conn:
            for chunk in chunks(ids):
                out += list(conn.execute(select(t.jobs).where(t.jobs.c.id.in_(chunk))))
        return out

    def run_jobs(self, workload: str, run_id: str) -> list[Any]:
        jc = t.jobs.c
        with self.engine.connect() as conn:
            return list(conn.execute(select(t.jobs).where(jc.workload == workload, jc.run_id == run_id).order_by(jc.id)))
