"""SQL table sink: completed records upserted into a table keyed by source id.

The table lives in the ledger database, so the upsert and the records' move to
``published`` commit in one transaction: readers never see half a publish, and a re-run
finds nothing left in ``completed`` and writes nothing twice.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Column, Connection, DateTime, Float, MetaData, String, Table, Text, select
from sqlalchemy.dialects import postgresql, sqlite

from batch_ai.ledger import tables as t
from batch_ai.ledger.states import State
from batch_ai.ledger.store import Change, Ledger, RecordKey, chunks, utcnow

log = logging.getLogger(__name__)

_TYPES = {"string": Text, "integer": BigInteger, "number": Float, "boolean": Boolean}


def sink_table(name: str, key: str, columns: list[str], output_schema: dict[str, Any]) -> Table:
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
        Column("record_id", BigInteger, nullable=False),
        Column("prompt_version", String(50), nullable=False),
        Column("schema_version", String(50), nullable=False),
        Column("model", String(100), nullable=False),
        Column("run_id", String(250), nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=False),
    )


def _upsert(conn: Connection, table: Table, key: str, rows: list[dict[str, Any]]) -> None:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:
        raise NotImplementedError(f"no upsert for {dialect}; use PostgreSQL or SQLite for the ledger")
    stmt = stmt.on_conflict_do_update(
        index_elements=[key], set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name != key}
    )
    conn.execute(stmt, rows)


def publish(ledger: Ledger, key: RecordKey, sink, output_schema: dict[str, Any], run_id: str, actor: str) -> dict[str, Any]:
    table = sink_table(sink.table, sink.key, sink.columns, output_schema)
    table.create(ledger.engine, checkfirst=True)
    rc = t.records.c
    now = utcnow()
    with ledger.engine.begin() as conn:
        q = select(rc.id, rc.source_id, rc.output).where(key.where(), rc.state == State.COMPLETED).order_by(rc.id)
        if ledger.is_postgres:
            q = q.with_for_update(skip_locked=True)  # a concurrent publish takes the others
        records = list(conn.execute(q))
        rows = [
            {
                sink.key: r.source_id,
                **{c: (r.output or {}).get(c) for c in sink.columns},
                "record_id": r.id,
                "prompt_version": key.prompt_version,
                "schema_version": key.schema_version,
                "model": key.model,
                "run_id": run_id,
                "published_at": now,
            }
            for r in records
        ]
        for part in chunks(rows):
            _upsert(conn, table, sink.key, list(part))
        ledger.apply(
            conn,
            [Change(r.id, State.PUBLISHED, f"upserted into {sink.table}", {"published_at": now}) for r in records],
            actor=actor,
            run_id=run_id,
        )
    log.info("published %d record(s) to %s", len(rows), sink.table)
    return {"published": len(rows), "table": sink.table}
