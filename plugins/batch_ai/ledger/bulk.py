"""Set-based statements that bind a bounded number of parameters, whatever the size of the set.

A statement that binds one parameter per record fails on large jobs (SQLite's default build
allows 32,766 variables, PostgreSQL's protocol 65,535). Here a set of ids is *one* parameter:
a PostgreSQL array (``= ANY(:ids)``) or a JSON array SQLite unpacks (``json_each(:ids)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from sqlalchemy import BigInteger, Connection, Select, Text, any_, bindparam, func, literal_column, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

#: Records per chunk of a streaming stage: what one transaction step reads, writes and holds.
STEP = 5000


def in_set(conn: Connection, column, values: Iterable[int] | Iterable[str]) -> ColumnElement[bool]:
    """``column IN values`` (all ids, or all strings) binding one parameter."""
    values = list(values)
    if conn.dialect.name == "postgresql":
        kind = Text() if values and isinstance(values[0], str) else BigInteger()
        return column == any_(bindparam(None, values, type_=ARRAY(kind)))
    members = select(literal_column("value")).select_from(
        func.json_each(bindparam(None, orjson.dumps(values).decode()))
    )
    return column.in_(members.scalar_subquery())


def keyset_pages(query: Select, id_column, fetch: Callable[[Select], list[Any]]) -> Iterator[list[Any]]:
    """The rows of ``query`` (ordered by ``id_column``, with a ``limit``) a page at a time, each
    fetched (``fetch(query)``: in a transaction of its own, or locked in the caller's) after the
    last id of the page before: the caller may change a page's rows before it asks for the next,
    and no offset is ever scanned twice."""
    last = 0
    while True:
        page = fetch(query.where(id_column > last))
        if not page:
            return
        last = page[-1].id
        yield page
