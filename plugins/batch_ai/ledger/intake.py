"""Intake: every source row of a run accounted for, and the records they make upserted.

An intake streams: rows come in chunks (:data:`~batch_ai.ledger.bulk.STEP` at a time) inside one
transaction, so a night of a million rows holds one chunk in memory and commits all or nothing.
Each chunk goes through four steps, each a method of :class:`_Pass`: **lookup** the records the
rows' ids already have, **insert** the new ones (queued, or dead letters), **requeue** the
existing ones whose content changed or that a backfill selects, and **account** for every row
read (a record, or a duplicate of a later row). Within a read the last row of an id wins: a
row repeated in a later chunk takes the record over from the earlier one, whose intake row
becomes the duplicate.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, and_, bindparam, select, update

from batch_ai.ledger import bulk_write
from batch_ai.ledger import tables as t
from batch_ai.ledger.bulk import STEP, in_set
from batch_ai.ledger.common import Change, IntakeRow, RecordKey, utcnow
from batch_ai.ledger.states import REQUEUE_ON_CHANGE, State

log = logging.getLogger(__name__)


def batched(rows: Iterable[IntakeRow], size: int | None = None) -> Iterator[list[IntakeRow]]:
    it = iter(rows)
    while chunk := list(itertools.islice(it, size or STEP)):
        yield chunk


class IntakeMixin:
    """The intake half of :class:`batch_ai.ledger.store.Ledger`."""

    def intake(
        self,
        key: RecordKey,
        provider: str,
        run_id: str,
        rows: Iterable[IntakeRow],
        *,
        actor: str,
        rerun: Iterable[State] = (),
        conn: Connection | None = None,
        version_override: bool = False,
    ) -> Counter:
        """Account for every source row of a run and upsert the records they make. ``rows`` may
        be a generator: it is read a chunk at a time.

        Returns how the rows were disposed of: ``new``, ``requeued``, ``unchanged``,
        ``changed_in_flight``, ``duplicate`` and ``dead_letter`` (the latter also counted
        once more as ``new`` or ``unchanged``); for a backfill (``rerun``: the record states to
        send round again) also ``rerun``, ``not_selected`` and ``invalid_same_version``.

        A backfill with another prompt or schema version than a record's moves that record to
        the new version when its state is selected, instead of making a second record; a
        record it does not select stays as it is. Runs inside ``conn``'s transaction if given
        (a dry run rolls it back).
        """
        rerun_states = frozenset(map(State, rerun)) & REQUEUE_ON_CHANGE
        if conn is None:
            with self.engine.begin() as own:
                return self.intake(
                    key, provider, run_id, rows, actor=actor, rerun=rerun, conn=own, version_override=version_override
                )
        step = _Pass(self, conn, key, provider, run_id, actor, rerun_states, version_override)
        step.begin()
        for chunk in batched(rows):
            step.add(chunk)
        return step.outcome

    def preview_intake(
        self,
        key: RecordKey,
        provider: str,
        run_id: str,
        rows: Iterable[IntakeRow],
        consume: Callable[[Iterable[Any]], Any],
        *,
        rerun: Iterable[State] = (),
        version_override: bool = False,
    ) -> tuple[Counter, Any]:
        """What an intake would do, changing nothing (the transaction is rolled back): a dry run.
        ``consume`` is given the records it would leave queued (id, input, attempts), streamed,
        and what it returns is returned beside the outcome."""
        with self.engine.connect() as conn:
            tx = conn.begin()
            try:
                outcome = self.intake(
                    key,
                    provider,
                    run_id,
                    rows,
                    actor="dry-run",
                    rerun=rerun,
                    conn=conn,
                    version_override=version_override,
                )
                return outcome, consume(self.queued(conn, key))
            finally:
                tx.rollback()


class _Pass:
    """One intake, inside one transaction."""

    def __init__(
        self,
        ledger,
        conn: Connection,
        key: RecordKey,
        provider: str,
        run_id: str,
        actor: str,
        rerun: frozenset[State],
        version_override: bool,
    ):
        self.ledger, self.conn, self.key, self.provider = ledger, conn, key, provider
        self.run_id, self.actor, self.rerun, self.version_override = run_id, actor, rerun, version_override
        self.now = utcnow()
        self.outcome: Counter = Counter()

    def begin(self) -> None:
        """A re-run of the same extract task replaces its own accounting."""
        ic = t.intake.c
        self.conn.execute(t.intake.delete().where(ic.workload == self.key.workload, ic.run_id == self.run_id))

    def add(self, chunk: Sequence[IntakeRow]) -> None:
        """Take in one chunk of rows."""
        # within one read, the last row for an id wins (daily exports append newer versions)
        last_row: dict[str, IntakeRow] = {row.source_id: row for row in chunk}
        earlier = self.taken_earlier(list(last_row))
        existing = self.lookup(list(last_row), self.key.where())
        # a row repeating one of an earlier chunk with the same content changes nothing
        repeats = {
            sid for sid in earlier if sid in existing and existing[sid].content_hash == last_row[sid].content_hash
        }
        winners = [r for sid, r in last_row.items() if sid not in repeats]
        rc = t.records.c
        # a backfill finds the records of other prompt/schema versions of the same model
        others = {}
        if self.rerun or self.version_override:
            unknown = [r.source_id for r in winners if r.source_id not in existing]
            others = self.lookup(unknown, and_(rc.workload == self.key.workload, rc.model == self.key.model))
        new_rows = [r for r in winners if r.source_id not in existing and r.source_id not in others]
        inserted = self.insert(new_rows)
        raced = [r.source_id for r in new_rows if r.source_id not in inserted]
        if raced:  # a concurrent run (a backfill beside the nightly) inserted these first
            existing.update(self.lookup(raced, self.key.where()))
        self.outcome["new"] += len(inserted)
        self.outcome["dead_letter"] += sum(1 for r in winners if r.malformed and r.source_id not in earlier)
        self.requeue(winners, existing, others)
        ids = {**inserted, **{sid: r.id for sid, r in existing.items()}, **{sid: r.id for sid, r in others.items()}}
        self.supersede(earlier, last_row)
        self.account(chunk, last_row, ids)

    def taken_earlier(self, source_ids: list[str]) -> dict[str, int]:
        """The row numbers of the rows of these ids an earlier chunk of this read took in."""
        ic = t.intake.c
        q = select(ic.source_id, ic.row_number).where(
            ic.workload == self.key.workload,
            ic.run_id == self.run_id,
            ic.disposition == "record",
            in_set(self.conn, ic.source_id, source_ids),
        )
        return dict(self.conn.execute(q).all())

    def supersede(self, earlier: dict[str, int], last_row: dict[str, IntakeRow]) -> None:
        """An earlier chunk's row of an id a later row repeats becomes the duplicate."""
        if not earlier:
            return
        ic = t.intake.c
        stmt = (
            update(t.intake)
            .where(ic.workload == self.key.workload, ic.run_id == self.run_id, ic.row_number == bindparam("p_row"))
            .values(disposition="duplicate", reason=bindparam("p_reason"))
        )
        self.conn.execute(
            stmt,
            [
                {"p_row": number, "p_reason": f"repeated by row {last_row[sid].row_number}"}
                for sid, number in earlier.items()
            ],
        )
        self.outcome["duplicate"] += len(earlier)

    def lookup(self, source_ids, where) -> dict[str, Any]:
        """The records of these source ids (under ``where``); the newest of a source id wins."""
        if not source_ids:
            return {}
        rc = t.records.c
        q = (
            select(rc.id, rc.source_id, rc.state, rc.content_hash)
            .where(where, in_set(self.conn, rc.source_id, source_ids))
            .order_by(rc.id)
        )
        if self.ledger.is_postgres:
            q = q.with_for_update()
        return {r.source_id: r for r in self.conn.execute(q)}

    def insert(self, new_rows: Sequence[IntakeRow]) -> dict[str, int]:
        """Insert the records new rows make, with their first audit row; returns their ids."""
        if not new_rows:
            return {}
        key_columns = ["workload", "source_id", "prompt_version", "model", "schema_version"]
        records = [self._new_record(r) for r in new_rows]
        result = bulk_write.insert_new(self.conn, t.records, records, key_columns, returning=["id", "source_id"])
        inserted: dict[str, int] = {r.source_id: r.id for r in result}
        audit = [
            {
                "record_id": inserted[r.source_id],
                "from_state": None,
                "to_state": self._state(r),
                "at": self.now,
                "actor": self.actor,
                "run_id": self.run_id,
                "attempt": 0,
                "reason": r.malformed or "extracted",
            }
            for r in new_rows
            if r.source_id in inserted
        ]
        bulk_write.insert_rows(self.conn, t.audit, audit)
        return inserted

    @staticmethod
    def _state(row: IntakeRow) -> str:
        return str(State.DEAD_LETTER if row.malformed else State.QUEUED)

    def _new_record(self, r: IntakeRow) -> dict[str, Any]:
        k = self.key
        return {
            "workload": k.workload,
            "source_id": r.source_id,
            "prompt_version": k.prompt_version,
            "model": k.model,
            "schema_version": k.schema_version,
            "content_hash": r.content_hash,
            "state": self._state(r),
            "input": r.data,
            "provider": self.provider,
            "attempts": 0,
            "error_kind": "malformed_input" if r.malformed else None,
            "error_message": r.malformed,
            "last_run_id": self.run_id,
            "source_date": r.source_date,
            "created_at": self.now,
            "updated_at": self.now,
        }

    def _fresh(self, r: IntakeRow, **more) -> dict[str, Any]:
        return {
            "input": r.data,
            "content_hash": r.content_hash,
            "output": None,
            "error_kind": None,
            "error_message": None,
            "validation_errors": None,
            "last_run_id": self.run_id,
            "source_date": r.source_date,
            **more,
        }

    def requeue(self, winners: Sequence[IntakeRow], existing: dict[str, Any], others: dict[str, Any]) -> None:
        """Send round again what changed at the source or what a backfill selects."""
        changes: list[Change] = []
        refresh: list[dict[str, Any]] = []
        for r in winners:
            if r.source_id in existing:
                change, fresh_input = self._decide(r, existing[r.source_id])
            elif r.source_id in others:
                change, fresh_input = self._decide_other_version(r, others[r.source_id]), None
            else:
                continue
            if change is not None:
                changes.append(change)
            if fresh_input is not None:
                refresh.append(fresh_input)
        if refresh:  # a queued record's content changed: it is sent with the new content
            # attempts count per content
            bulk_write.update_by_id(self.conn, t.records, refresh, attempts=0, updated_at=self.now)
        self.ledger.apply(self.conn, changes, actor=self.actor, run_id=self.run_id)

    def _decide(self, r: IntakeRow, old) -> tuple[Change | None, dict[str, Any] | None]:
        if old.content_hash == r.content_hash:
            if State(old.state) not in self.rerun:
                self.outcome["unchanged"] += 1
            elif old.state == State.INVALID_OUTPUT:
                self.outcome["invalid_same_version"] += 1  # the same prompt and schema would fail the same way
            else:
                self.outcome["rerun"] += 1
                return Change(old.id, State.QUEUED, f"backfill: rerun of {old.state}", self._fresh(r)), None
            return None, None
        if old.state == State.QUEUED:
            self.outcome["requeued"] += 1
            return None, {"id": old.id, "input": r.data, "content_hash": r.content_hash, "source_date": r.source_date}
        if old.state in REQUEUE_ON_CHANGE:
            self.outcome["requeued"] += 1
            # attempts count per content: the new content has not been tried yet
            return Change(old.id, State.QUEUED, "source content changed", self._fresh(r, attempts=0)), None
        # submitted: the job in flight answers for the old content
        log.warning(
            "record %s (source id %s) changed while %s; the new content is taken on the next run",
            old.id,
            r.source_id,
            old.state,
        )
        self.outcome["changed_in_flight"] += 1
        return None, None

    def _decide_other_version(self, r: IntakeRow, other) -> Change | None:
        if State(other.state) not in self.rerun:
            self.outcome["not_selected"] += 1
            return None
        self.outcome["rerun"] += 1
        k = self.key
        reason = f"backfill: rerun of {other.state} with prompt {k.prompt_version}, schema {k.schema_version}"
        return Change(
            other.id,
            State.QUEUED,
            reason,
            # another prompt or schema is another idempotency key: its attempts start afresh
            self._fresh(r, prompt_version=k.prompt_version, schema_version=k.schema_version, attempts=0),
        )

    def account(self, chunk: Sequence[IntakeRow], last_row: dict[str, IntakeRow], ids: dict[str, int]) -> None:
        """One intake row per source row read: the record it made, or the later row it repeats."""
        intake_rows = []
        for row in chunk:
            later = last_row[row.source_id]
            if later is row:
                disposition, reason = "record", row.malformed
            else:
                disposition = "duplicate"
                same = later.content_hash == row.content_hash
                reason = f"{'duplicate of' if same else 'superseded by'} row {later.row_number}"
                self.outcome["duplicate"] += 1
            intake_rows.append(
                {
                    "workload": self.key.workload,
                    "run_id": self.run_id,
                    "row_number": row.row_number,
                    "source_id": row.source_id,
                    "record_id": ids[row.source_id],
                    "disposition": disposition,
                    "reason": reason,
                }
            )
        bulk_write.insert_rows(self.conn, t.intake, intake_rows)
