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
    bindparam,
    case,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from batch_ai.ledger import tables as t
from batch_ai.ledger.bulk import in_set
from batch_ai.ledger.common import RecordKey, utcnow
from batch_ai.ledger.states import State

_TYPES = {"string": Text, "integer": BigInteger, "number": Float, "boolean": Boolean}
PENDING, PUBLISHED, REJECTED = "pending", "published", "rejected"


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
        # lineage added later: a sink table made before it gains the column (nullable) when next used
        Column("provider_request_id", String(200), nullable=True),
    )


def _insert(conn: Connection, table: Table):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


class SinksMixin:
    """The table-sink half of :class:`batch_ai.ledger.store.Ledger`."""

    def sink_table(self, sink, output_schema: dict[str, Any]) -> Table:
        """The sink's table, created if missing."""
        table = sink_table(sink.table, sink.key, sink.columns, output_schema)
        self.create(table)
        self._add_missing_columns(table)
        return table

    def _add_missing_columns(self, table: Table) -> None:
        """Nullable columns the table's definition has and the table in the database lacks (a
        sink made by an earlier version), added in place; nothing in it changes."""
        with self.engine.begin() as conn:
            have = {c["name"] for c in inspect(conn).get_columns(table.name)}
            for column in table.columns:
                if column.name not in have and column.nullable:
                    kind = column.type.compile(dialect=conn.dialect)
                    conn.execute(text(f'alter table "{table.name}" add column "{column.name}" {kind}'))

    def mark_pending(self, key: RecordKey, sink, output_schema: dict[str, Any]) -> int:
        """Add a ``pending`` row for each queued record that has no row yet (one set-based
        statement); returns how many."""
        table = self.sink_table(sink, output_schema)
        rc = t.records.c
        queued = select(
            rc.source_id,
            literal(PENDING),
            rc.source_date,
            rc.id,
            literal(key.prompt_version),
            literal(key.schema_version),
            literal(key.model),
            func.coalesce(rc.last_run_id, ""),
        ).where(key.where(), rc.state == State.QUEUED)
        columns = [sink.key, "publish_status", "source_date", "record_id", "prompt_version", "schema_version"]
        with self.engine.begin() as conn:
            stmt = _insert(conn, table).from_select([*columns, "model", "run_id"], queued)
            return conn.execute(stmt.on_conflict_do_nothing(index_elements=[sink.key])).rowcount

    def publish_to_table(
        self,
        key: RecordKey,
        sink,
        output_schema: dict[str, Any],
        run_id: str,
        actor: str,
        gated_by: str | None = None,
    ) -> dict[str, Any]:
        """Upsert the key's ``completed`` records (those the quality gate of run ``gated_by``
        checked, when given) into the sink and move them to ``published``, in one transaction.
        Each page of records is three set-based statements (the audit rows, the upsert straight
        from the records' outputs, their move); no output passes through Python."""
        table = self.sink_table(sink, output_schema)
        outcome = {"published": 0, "superseded": 0, "rejected_marked": 0, "table": sink.table}
        with self.engine.begin() as conn:
            page_of = _PublishPage(conn, table, key, sink, run_id, actor)
            for page in self.ready_to_publish(conn, key, gated_by):  # a concurrent publish takes the others
                written = page_of.publish([r.id for r in page])
                outcome["published"] += written
                outcome["superseded"] += len(page) - written
            rejected = select(t.records.c.source_id).where(key.where(), t.records.c.state == State.REJECTED)
            outcome["rejected_marked"] = conn.execute(
                update(table)
                .where(table.c.publish_status == PENDING, table.c[sink.key].in_(rejected))
                .values(publish_status=REJECTED)
            ).rowcount
        return outcome


class _PublishPage:
    """The statements publishing one page of records to a table sink."""

    def __init__(self, conn: Connection, table: Table, key: RecordKey, sink, run_id: str, actor: str):
        self.conn, self.table, self.key, self.sink, self.run_id, self.actor = conn, table, key, sink, run_id, actor
        self.now = utcnow()

    def publish(self, ids: list[int]) -> int:
        """Publish these records; returns how many rows the upsert wrote (the others were kept
        for newer source data)."""
        rc = t.records.c
        page = in_set(self.conn, rc.id, ids)
        self._audit(page, self._superseded(page))
        written = len(self.conn.execute(self._upsert(page)).all())
        self.conn.execute(
            update(t.records)
            .where(page, rc.state == State.COMPLETED)
            .values(state=State.PUBLISHED, published_at=self.now, updated_at=self.now, gated_run_id=None)
        )
        return written

    def _superseded(self, page) -> list[int]:
        """The page's records whose key already holds the published result of newer source data."""
        rc, sc = t.records.c, self.table.c
        newer = select(rc.id).join(self.table, sc[self.sink.key] == rc.source_id)
        newer = newer.where(page, sc.publish_status != PENDING, sc.source_date > rc.source_date)
        return list(self.conn.scalars(newer))

    def _audit(self, page, superseded: list[int]) -> None:
        rc, ac = t.records.c, t.audit.c
        upserted = f"upserted into {self.sink.table}"
        reason = literal(upserted)
        if superseded:
            newer = f"superseded: {self.sink.table} already holds the result of newer source data"
            reason = case((in_set(self.conn, rc.id, superseded), literal(newer)), else_=literal(upserted))
        rows = select(
            rc.id,
            rc.state,
            literal(str(State.PUBLISHED)),
            bindparam(None, self.now, type_=ac.at.type),
            literal(self.actor),
            literal(self.run_id),
            rc.attempts,
            reason,
        ).where(page, rc.state == State.COMPLETED)
        columns = ["record_id", "from_state", "to_state", "at", "actor", "run_id", "attempt", "reason"]
        self.conn.execute(insert(t.audit).from_select(columns, rows))

    def _upsert(self, page):
        """One ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` from the records' outputs,
        returning the keys it wrote."""
        rc, key, sink, table = t.records.c, self.key, self.sink, self.table
        outputs = [_field(rc.output[c], table.c[c].type) for c in sink.columns]
        rows = select(
            rc.source_id,
            *outputs,
            literal(PUBLISHED),
            rc.source_date,
            rc.id,
            literal(key.prompt_version),
            literal(key.schema_version),
            literal(key.model),
            literal(self.run_id),
            bindparam(None, self.now, type_=table.c.published_at.type),
            rc.provider_request_id,
        ).where(page, rc.state == State.COMPLETED)
        columns = [sink.key, *sink.columns, "publish_status", "source_date", "record_id", "prompt_version"]
        columns += ["schema_version", "model", "run_id", "published_at", "provider_request_id"]
        stmt = _insert(self.conn, table).from_select(columns, rows)
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


def _field(element, kind):
    """An output field as the sink column's type, read in SQL from the record's JSON output."""
    if isinstance(kind, Boolean):
        return element.as_boolean()
    if isinstance(kind, BigInteger):
        return element.as_integer()
    if isinstance(kind, Float):
        return element.as_float()
    if isinstance(kind, Text):
        return element.as_string()
    return element.as_json()
