"""The table sinks: published records upserted into a table in the ledger's database.

The table lives beside the ledger, so the upsert and the records' move to ``published``
commit in one transaction: readers never see half a publish, and a re-run finds nothing left
in ``completed`` and writes nothing twice.

Customers read ``publish_status``: a row is ``pending`` from the moment its record is
queued until its result is published (``published``) or a reviewer rejects it
(``rejected``). An earlier published result stays visible while a newer one is worked on,
and a result of older source data never replaces that of newer data (``source_date``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Float,
    MetaData,
    String,
    Table,
    Text,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from batch_ai.ledger import tables as t
from batch_ai.ledger.common import Change, RecordKey, chunks, utcnow
from batch_ai.ledger.states import State

_TYPES = {"string": Text, "integer": BigInteger, "number": Float, "boolean": Boolean}
PENDING, PUBLISHED, REJECTED = "pending", "published", "rejected"
#: rows per multi-row insert or upsert statement
ROWS_PER_STATEMENT = 500


def sink_table(name: str, key: str, columns: list[str], output_schema: dict[str, Any]) -> Table:
    """The sink table: the key, the published columns (typed from the output schema) and lineage."""
    props = output_schema.get("properties", {})

    def col_type(field: str):
        kind = props.get(field, {}).get("type", "string")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "string")
        return _TYPES.get(kind, JSON)

    return Table(
        name,
        MetaData(),
        Column(key, String(200), primary_key=True),
        *[Column(c, col_type(c), nullable=True) for c in columns],
        Column("publish_status", String(20), nullable=False),  # pending | published | rejected
        Column("source_date", Date, nullable=True),
        Column("record_id", BigInteger, nullable=False),
        Column("prompt_version", String(50), nullable=False),
        Column("schema_version", String(50), nullable=False),
        Column("model", String(100), nullable=False),
        Column("run_id", String(250), nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=True),
    )


def _insert(conn: Connection, table: Table):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


class SinksMixin:
    """The table-sink half of :class:`batch_ai.ledger.store.Ledger`."""

    def sink_table(self, sink, output_schema: dict[str, Any]) -> Table:
        """The sink's table, created if missing."""
        table = sink_table(sink.table, sink.key, sink.columns, output_schema)
        self.create(table)
        return table

    def mark_pending(self, key: RecordKey, sink, output_schema: dict[str, Any]) -> int:
        """Add a ``pending`` row for each queued record that has no row yet; returns how many."""
        table = self.sink_table(sink, output_schema)
        rc = t.records.c
        added = 0
        with self.engine.begin() as conn:
            queued = list(
                conn.execute(
                    select(rc.id, rc.source_id, rc.source_date, rc.last_run_id).where(
                        key.where(), rc.state == State.QUEUED
                    )
                )
            )
            for part in chunks(queued, ROWS_PER_STATEMENT):
                stmt = (
                    _insert(conn, table)
                    .values(
                        [
                            {
                                sink.key: r.source_id,
                                "publish_status": PENDING,
                                "source_date": r.source_date,
                                "record_id": r.id,
                                "prompt_version": key.prompt_version,
                                "schema_version": key.schema_version,
                                "model": key.model,
                                "run_id": r.last_run_id or "",
                            }
                            for r in part
                        ]
                    )
                    .on_conflict_do_nothing(index_elements=[sink.key])
                )
                added += len(conn.execute(stmt.returning(table.c[sink.key])).all())
        return added

    def publish_to_table(
        self,
        key: RecordKey,
        sink,
        output_schema: dict[str, Any],
        run_id: str,
        actor: str,
        only: list[int] | None = None,
    ) -> dict[str, Any]:
        """Upsert the key's ``completed`` records (``only``: those the gate checked) into the sink
        and move them to ``published``, in one transaction."""
        table = self.sink_table(sink, output_schema)
        now = utcnow()
        written: set[str] = set()
        with self.engine.begin() as conn:
            records = self.lock_ready(conn, key, only)  # a concurrent publish takes the others
            for part in chunks(records, ROWS_PER_STATEMENT):
                written.update(conn.scalars(self._upsert(conn, table, key, sink, part, run_id, now)))
            self.apply(
                conn,
                [
                    Change(
                        r.id,
                        State.PUBLISHED,
                        f"upserted into {sink.table}"
                        if r.source_id in written
                        else f"superseded: {sink.table} already holds the result of newer source data",
                        {"published_at": now},
                    )
                    for r in records
                ],
                actor=actor,
                run_id=run_id,
            )
            rejected = select(t.records.c.source_id).where(key.where(), t.records.c.state == State.REJECTED)
            withheld = conn.execute(
                update(table)
                .where(table.c.publish_status == PENDING, table.c[sink.key].in_(rejected))
                .values(publish_status=REJECTED)
            ).rowcount
        return {
            "published": len(written),
            "superseded": len(records) - len(written),
            "rejected_marked": withheld,
            "table": sink.table,
        }

    @staticmethod
    def _upsert(conn: Connection, table: Table, key: RecordKey, sink, records, run_id: str, now):
        """One multi-row upsert, returning the keys it wrote (not those kept for newer data)."""
        stmt = _insert(conn, table).values(
            [
                {
                    sink.key: r.source_id,
                    **{c: (r.output or {}).get(c) for c in sink.columns},
                    "publish_status": PUBLISHED,
                    "source_date": r.source_date,
                    "record_id": r.id,
                    "prompt_version": key.prompt_version,
                    "schema_version": key.schema_version,
                    "model": key.model,
                    "run_id": run_id,
                    "published_at": now,
                }
                for r in records
            ]
        )
        current = table.c.source_date
        return stmt.on_conflict_do_update(
            index_elements=[sink.key],
            set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name != sink.key},
            # never replace the result of newer source data with that of older data
            # (a pending row holds no result yet: anything may fill it)
            where=or_(
                table.c.publish_status == PENDING,
                current.is_(None),
                stmt.excluded.source_date.is_(None),
                current <= stmt.excluded.source_date,
            ),
        ).returning(table.c[sink.key])
