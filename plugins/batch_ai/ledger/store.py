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
from batch_ai.ledger.common import CHUNK, Change, IntakeRow, RecordKey, chunks, utcnow
from batch_ai.ledger.engine import ledger_url, make_engine
from batch_ai.ledger.jobs import JobsMixin
from batch_ai.ledger.publications import PublicationsMixin
from batch_ai.ledger.states import REQUEUE_ON_CHANGE, IllegalTransition, State, check_transitions

__all__ = ["CHUNK", "Change", "IntakeRow", "Ledger", "RecordKey", "chunks", "utcnow"]

log = logging.getLogger(__name__)

class Ledger(JobsMixin, PublicationsMixin):
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
        only_from: State | None = None,
        in_job: int | None = None,
    ) -> list[Change]:
        """Apply state changes in bulk inside ``conn``'s transaction, with audit rows. Returns the
        changes applied.

        ``expect_from``: every record must be in that state now (checked under the row lock),
        for a decision taken on what a person saw. ``only_from`` (and ``in_job``): changes of
        records no longer in that state (or job) are left out instead, for moves that another
        process may have made first (two runs collecting the same job)."""
        if not changes:
            return []
        ids = [c.record_id for c in changes]
        if len(set(ids)) != len(ids):
            dupes = [i for i, n in Counter(ids).items() if n > 1]
            raise ValueError(f"records changed twice in one operation: {dupes[:10]}")
        rc = t.records.c
        current: dict[int, Any] = {}
        for chunk in chunks(ids):
            q = select(rc.id, rc.state, rc.attempts, rc.job_id).where(rc.id.in_(chunk))
            if self.is_postgres:
                q = q.with_for_update()
            current.update({row.id: row for row in conn.execute(q)})
        missing = [i for i in ids if i not in current]
        if missing:
            raise KeyError(f"unknown record ids: {missing[:10]}")
        if only_from is not None:
            changes = [c for c in changes if current[c.record_id].state == only_from
                       and (in_job is None or current[c.record_id].job_id == in_job)]
            if not changes:
                return []
        if expect_from is not None:
            moved = [f"record {i} is {current[i].state}" for i in ids if current[i].state != expect_from]
            if moved:
                raise IllegalTransition(f"expected {expect_from}: {'; '.join(moved[:10])}")
        check_transitions((c.record_id, current[c.record_id].state, c.to) for c in changes)

        now = utcnow()
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for c in changes:
            values = c.values
            if c.to == State.QUEUED and "job_id" not in values:
                values = {**values, "job_id": None}  # queued again: free for any job to take
            cols = tuple(sorted(values))
            params = {f"p_{k}": v for k, v in values.items()}
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
        return list(changes)

    def transition(self, changes: Sequence[Change], **kwargs) -> list[Change]:
        with self.engine.begin() as conn:
            return self.apply(conn, changes, **kwargs)

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
                    select(rc.source_id, rc.error_message, ic.reason)
                    .select_from(t.intake.join(t.records, ic.record_id == rc.id))
                    .where(ic.workload == workload, ic.run_id == run_id, ic.disposition == "record", rc.state == state)
                    .order_by(rc.id)
                    .limit(per_state)
                ).all()
                if rows:
                    # a dead letter's reason as this run read it (its file and line), not as first seen
                    out[str(state)] = [{"source_id": r.source_id, "reason": (r.reason if state == State.DEAD_LETTER else None)
                                        or r.error_message} for r in rows]
        return out

    def mean_output_tokens(self, workload: str) -> float | None:
        """Mean output tokens of the workload's answered records (``None`` before the first)."""
        rc = t.records.c
        with self.engine.connect() as conn:
            value = conn.scalar(select(func.avg(rc.output_tokens)).where(rc.workload == workload, rc.output_tokens > 0))
        return float(value) if value is not None else None
