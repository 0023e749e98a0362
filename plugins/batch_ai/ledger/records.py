"""The ledger's records: state changes (each with its audit row) and the reads the stages need.

Every change of a record's state goes through :meth:`RecordsMixin.apply`, which checks it
against the life cycle (:mod:`batch_ai.ledger.states`) under the rows' locks and writes the
records and their audit rows in bulk statements.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, and_, func, select, update

from batch_ai.errors import IllegalTransition
from batch_ai.ledger import bulk_write
from batch_ai.ledger import tables as t
from batch_ai.ledger.bulk import STEP, in_set, keyset_pages
from batch_ai.ledger.common import Change, RecordKey, chunks, utcnow
from batch_ai.ledger.states import State, check_transitions


class RecordsMixin:
    """The record half of :class:`batch_ai.ledger.store.Ledger` (it provides ``engine``)."""

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
        current = self._current(conn, changes)
        if only_from is not None:
            changes = [
                c
                for c in changes
                if current[c.record_id].state == only_from and (in_job is None or current[c.record_id].job_id == in_job)
            ]
        if expect_from is not None:
            moved = [
                f"record {c.record_id} is {current[c.record_id].state}"
                for c in changes
                if current[c.record_id].state != expect_from
            ]
            if moved:
                raise IllegalTransition(f"expected {expect_from}: {'; '.join(moved[:10])}")
        check_transitions((c.record_id, current[c.record_id].state, c.to) for c in changes)
        now = utcnow()
        self._write_changes(conn, changes, now)
        audit = [
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
                "request_id": c.values.get("provider_request_id"),  # the answer this change is about
            }
            for c in changes
        ]
        bulk_write.insert_rows(conn, t.audit, audit)
        return list(changes)

    def _current(self, conn: Connection, changes: Sequence[Change]) -> dict[int, Any]:
        """The records' state, attempts and job now, locked (PostgreSQL) for the change."""
        ids = [c.record_id for c in changes]
        if len(set(ids)) != len(ids):
            dupes = [i for i, n in Counter(ids).items() if n > 1]
            raise ValueError(f"records changed twice in one operation: {dupes[:10]}")
        rc = t.records.c
        current: dict[int, Any] = {}
        for chunk in chunks(ids, STEP):
            q = select(rc.id, rc.state, rc.attempts, rc.job_id).where(in_set(conn, rc.id, chunk))
            if self.is_postgres:
                q = q.with_for_update()
            current.update({row.id: row for row in conn.execute(q)})
        missing = [i for i in ids if i not in current]
        if missing:
            raise KeyError(f"unknown record ids: {missing[:10]}")
        return current

    @staticmethod
    def _write_changes(conn: Connection, changes: Sequence[Change], now) -> None:
        """One set-based update per set of changed columns (:func:`bulk_write.update_by_id`)."""
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for c in changes:
            values = c.values
            if c.to == State.QUEUED and "job_id" not in values:
                values = {**values, "job_id": None}  # queued again: free for any job to take
            if "gated_run_id" not in values:
                values = {**values, "gated_run_id": None}  # what a gate checked was the record before
            by_columns.setdefault(tuple(sorted(values)), []).append({"id": c.record_id, "state": str(c.to), **values})
        for rows in by_columns.values():
            bulk_write.update_by_id(conn, t.records, rows, updated_at=now)

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

    # -- reading ---------------------------------------------------------------------------

    def pick_records(
        self, key: RecordKey, state: State, choose: Callable[[int], Sequence[int]]
    ) -> tuple[int, list[Any]]:
        """How many of the key's records are in ``state``, and those at the positions (in id
        order) that ``choose(count)`` names, in its order: a sample, read in one pass over the
        ids with only the chosen ones kept (as :meth:`records_by_id` gives them)."""
        rc = t.records.c
        where = and_(key.where(), rc.state == state)
        with self.engine.connect() as conn:
            count = conn.scalar(select(func.count()).where(where))
            positions = list(choose(count))
            wanted, found = set(positions), {}
            ids = conn.execution_options(yield_per=STEP).scalars(select(rc.id).where(where).order_by(rc.id))
            for n, record_id in enumerate(ids):
                if n in wanted:
                    found[n] = record_id
        records = self.records_by_id(list(found.values()))
        return count, [records[found[n]] for n in positions if n in found]

    def ready_pages(self, key: RecordKey, size: int) -> Iterator[list[Any]]:
        """The key's ``completed`` records (id, source id, output), ``size`` at a time in id order."""
        rc = t.records.c
        q = (
            select(rc.id, rc.source_id, rc.output)
            .where(key.where(), rc.state == State.COMPLETED)
            .order_by(rc.id)
            .limit(size)
        )
        return keyset_pages(q, rc.id, self._read)

    def _read(self, query) -> list[Any]:
        """The rows of a query, in a transaction of its own."""
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def mark_gated(self, ids: Sequence[int], run_id: str) -> None:
        """These records (still ``completed``) are what the run's quality gate checked."""
        rc = t.records.c
        with self.engine.begin() as conn:
            mine = and_(in_set(conn, rc.id, ids), rc.state == State.COMPLETED)
            conn.execute(update(t.records).where(mine).values(gated_run_id=run_id))

    def ready_to_publish(self, conn: Connection, key: RecordKey, gated_by: str | None) -> Iterator[list[Any]]:
        """Pages of the key's ``completed`` records (of those the quality gate of run ``gated_by``
        checked, when given) for a publish inside ``conn``'s transaction, in id order. On
        PostgreSQL they are locked, skipping those a concurrent publish holds."""
        rc = t.records.c
        q = (
            select(rc.id, rc.source_id, rc.output, rc.source_date, rc.provider_request_id)
            .where(key.where(), rc.state == State.COMPLETED)
            .order_by(rc.id)
            .limit(STEP)
        )
        if gated_by is not None:
            q = q.where(rc.gated_run_id == gated_by)
        if self.is_postgres:
            q = q.with_for_update(skip_locked=True)
        return keyset_pages(q, rc.id, lambda page: list(conn.execute(page)))

    def records_by_id(self, ids: Sequence[int]) -> dict[int, Any]:
        """What collecting a result needs of its record (id, source id, input, attempts, custom id,
        state, job, cost so far), by id; one statement however many."""
        if not ids:
            return {}
        rc = t.records.c
        q = select(rc.id, rc.source_id, rc.input, rc.attempts, rc.custom_id, rc.state, rc.job_id, rc.cost_usd)
        with self.engine.connect() as conn:
            return {r.id: r for r in conn.execute(q.where(in_set(conn, rc.id, ids)))}

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
            q = select(t.records).where(rc.workload == workload, rc.source_id == source_id).order_by(rc.id)
            return list(conn.execute(q))

    def review_queue(self, workload: str | None = None, limit: int = 200) -> list[Any]:
        rc = t.records.c
        q = select(t.records).where(rc.state == State.REVIEW_REQUIRED).order_by(rc.workload, rc.id).limit(limit)
        if workload:
            q = q.where(rc.workload == workload)
        with self.engine.connect() as conn:
            return list(conn.execute(q))

    def review_counts(self) -> dict[str, int]:
        rc = t.records.c
        q = (
            select(rc.workload, func.count())
            .where(rc.state == State.REVIEW_REQUIRED)
            .group_by(rc.workload)
            .order_by(rc.workload)
        )
        with self.engine.connect() as conn:
            return dict(conn.execute(q).all())

    def history(self, record_id: int) -> list[Any]:
        """Every state change of a record, oldest first, with the token and provider id of its job."""
        a, j = t.audit.c, t.jobs.c
        q = (
            select(t.audit, j.token, j.provider_job_id)
            .select_from(t.audit.outerjoin(t.jobs, a.job_id == j.id))
            .where(a.record_id == record_id)
            .order_by(a.id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(q))

    def mean_output_tokens(self, workload: str) -> float | None:
        """Mean output tokens of the workload's answered records (``None`` before the first)."""
        rc = t.records.c
        with self.engine.connect() as conn:
            value = conn.scalar(select(func.avg(rc.output_tokens)).where(rc.workload == workload, rc.output_tokens > 0))
        return float(value) if value is not None else None

    def queued(self, conn: Connection, key: RecordKey) -> Iterator[Any]:
        """The key's queued records (id, input, attempts) inside ``conn``'s transaction, streamed."""
        rc = t.records.c
        q = select(rc.id, rc.input, rc.attempts).where(key.where(), rc.state == State.QUEUED).order_by(rc.id)
        return iter(conn.execution_options(yield_per=STEP).execute(q))
