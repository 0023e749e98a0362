"""Many rows in or changed with one statement's worth of server work: PostgreSQL's ``COPY``.

A stage writes a chunk of rows at a time (an audit row per record, a record per source row, a
state change per result). As ``INSERT ... VALUES`` pages or one ``UPDATE`` per row, PostgreSQL
parses and plans every statement of the chunk; ``COPY`` streams the rows into the table (or into
a temporary staging table that one ``UPDATE ... FROM`` / ``INSERT ... SELECT`` then applies),
which is several times less work for the server and for Python (no SQLAlchemy parameter
processing per row). Elsewhere (SQLite) the same calls are bounded ``executemany`` statements.

Values are encoded as SQLAlchemy would bind them: JSON columns through the ledger's JSON
writer, ``None`` in a JSON column as JSON ``null`` (SQLAlchemy's default, ``none_as_null=False``),
and every other ``None`` as SQL ``NULL``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    Date,
    DateTime,
    Float,
    Integer,
    String,
    Table,
    TableClause,
    bindparam,
    column,
    insert,
    select,
    update,
)
from sqlalchemy import table as table_clause
from sqlalchemy.dialects import postgresql, sqlite

from batch_ai import jsonio
from batch_ai.ledger.common import chunks

#: COPY's text format: these characters of a value are written escaped
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NULL = "\\N"


def _encoder(column):
    """How one column's Python values are written in COPY's text format (one small function per
    column type: this runs for every value of every row)."""
    kind = column.type
    if isinstance(kind, JSON):
        return lambda v: jsonio.dumps_text(v).translate(_ESCAPES)
    if isinstance(kind, Boolean):
        return lambda v: _NULL if v is None else ("t" if v else "f")
    if isinstance(kind, (DateTime, Date)):
        return lambda v: _NULL if v is None else v.isoformat()
    if isinstance(kind, (Integer, Float)):
        return lambda v: _NULL if v is None else str(v)
    if isinstance(kind, String):  # Text too
        return lambda v: _NULL if v is None else v.translate(_ESCAPES)
    raise TypeError(f"no COPY encoding for column {column.name} of type {kind!r}")


def _copy(conn: Connection, target: str, table: Table, columns: Sequence[str], rows: Sequence[dict]) -> None:
    encoders = [_encoder(table.c[c]) for c in columns]
    buffer = io.StringIO()
    write = buffer.write
    for row in rows:
        write("\t".join([enc(row[c]) for enc, c in zip(encoders, columns, strict=True)]))
        write("\n")
    buffer.seek(0)
    names = ", ".join(f'"{c}"' for c in columns)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"COPY {target} ({names}) FROM STDIN", buffer)
    finally:
        cursor.close()


def _staging(conn: Connection, table: Table, columns: Sequence[str]) -> TableClause:
    """A temporary table with these columns of ``table`` (their types, no constraints), empty,
    dropped when the transaction ends."""
    digest = hashlib.sha1(",".join(columns).encode()).hexdigest()[:12]
    name = f"batch_ai_stage_{table.name.removeprefix('batch_ai_')}_{digest}"
    names = ", ".join(f'"{c}"' for c in columns)
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE IF NOT EXISTS {name} ON COMMIT DROP AS SELECT {names} FROM {table.name} WITH NO DATA"
    )
    conn.exec_driver_sql(f"TRUNCATE {name}")
    return table_clause(name, *(column(c) for c in columns))


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict]) -> None:
    """``INSERT`` these rows (every row with the same keys) into ``table``."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        for part in chunks(rows):
            conn.execute(insert(table), list(part))
        return
    _copy(conn, table.name, table, list(rows[0]), rows)


def update_by_id(conn: Connection, table: Table, rows: Sequence[dict], **same: Any) -> None:
    """For each row, ``UPDATE table SET <the row's other keys> WHERE id = row["id"]`` (every row
    with the same keys), and the columns of ``same`` set to one value for all of them."""
    if not rows:
        return
    columns = [c for c in rows[0] if c != "id"]
    if conn.dialect.name != "postgresql":
        stmt = (
            update(table)
            .where(table.c.id == bindparam("p_id"))
            .values(**same, **{c: bindparam(f"p_{c}") for c in columns})
        )
        for part in chunks(rows):
            conn.execute(stmt, [{f"p_{k}": v for k, v in row.items()} for row in part])
        return
    staging = _staging(conn, table, ["id", *columns])
    _copy(conn, staging.name, table, ["id", *columns], rows)
    stmt = update(table).where(table.c.id == staging.c.id).values(**same, **{c: staging.c[c] for c in columns})
    conn.execute(stmt)


def insert_new(conn: Connection, table: Table, rows: Sequence[dict], key: Sequence[str], returning: Sequence[str]):
    """``INSERT`` these rows, skipping those whose ``key`` is taken (``ON CONFLICT DO NOTHING``),
    returning ``returning`` of the rows inserted."""
    if not rows:
        return []
    cols = [table.c[c] for c in returning]
    if conn.dialect.name != "postgresql":
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(key)).returning(*cols)
        return conn.execute(stmt, list(rows)).all()
    columns = list(rows[0])
    staging = _staging(conn, table, columns)
    _copy(conn, staging.name, table, columns, rows)
    stmt = postgresql.insert(table).from_select(columns, select(*staging.c))
    stmt = stmt.on_conflict_do_nothing(index_elements=list(key))
    return conn.execute(stmt.returning(*cols)).all()
