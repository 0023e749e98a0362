"""The ledger's schema, managed with Alembic (the tool Airflow manages its own with).

One revision per change in ``versions/``; the ledger records its revision in a table of its own
(``batch_ai_alembic_version``: the ledger may share a database with Airflow's metadata, whose
``alembic_version`` is Airflow's). :func:`ensure_current` is what :meth:`Ledger.connect` calls:
one query when the schema is current; otherwise the upgrade, in one transaction under a lock
(PostgreSQL's advisory lock; SQLite's write lock), so two tasks starting at once on a ledger
that is behind upgrade it once. A ledger created before migrations existed is checked against
the baseline and stamped with it first. ``python -m batch_ai db upgrade|current|history``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, text

log = logging.getLogger(__name__)

VERSION_TABLE = "batch_ai_alembic_version"
#: the newest revision; tests check it is Alembic's head, so the fast path cannot go stale
HEAD = "0002"
BASELINE = "0001"
#: what a ledger made before migrations has (the baseline's tables and columns)
_PRE_MIGRATION_TABLE = "batch_ai_records"


class SchemaError(RuntimeError):
    pass


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Only the ledger's own tables: the database may also hold Airflow's and the sink tables."""
    if type_ == "table":
        return name.startswith("batch_ai_") and name != VERSION_TABLE
    table = getattr(obj, "table", None)
    return table is None or table.name.startswith("batch_ai_")


def current(conn: Connection) -> str | None:
    """The ledger's revision, or ``None`` for a database without migrations."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"select version_num from {VERSION_TABLE}")).scalar()


def ensure_current(engine: Engine) -> None:
    """Upgrade the ledger to :data:`HEAD` when it is behind (under a lock); one query otherwise."""
    with engine.connect() as conn:
        if current(conn) == HEAD:
            return
    upgrade(engine)


def upgrade(engine: Engine, target: str = "head") -> list[str]:
    """Upgrade to ``target`` in one transaction under the ledger's lock; returns the revisions applied."""
    from alembic import command

    with engine.begin() as conn:  # on SQLite this is BEGIN IMMEDIATE: the write lock, held to the end
        if conn.dialect.name == "postgresql":
            conn.execute(text("select pg_advisory_xact_lock(hashtext('batch_ai.ledger_migrations'))"))
        before = current(conn)  # read again under the lock: another process may have upgraded
        if before is None and inspect(conn).has_table(_PRE_MIGRATION_TABLE):
            _check_baseline(conn)
            command.stamp(_config(conn), BASELINE)
            before = BASELINE
            log.info("ledger made before migrations: stamped with the baseline %s", BASELINE)
        command.upgrade(_config(conn), target)
        after = current(conn)
    applied = _between(before, after)
    if applied:
        log.info("ledger upgraded from %s to %s: %s", before or "nothing", after, ", ".join(applied))
    return applied


def history() -> list[tuple[str, str]]:
    """Every revision, oldest first: (revision, first line of its message)."""
    scripts = _script()
    revisions = list(scripts.walk_revisions())
    return [(r.revision, (r.doc or "").splitlines()[0]) for r in reversed(revisions)]


def _between(before: str | None, after: str | None) -> list[str]:
    order = [rev for rev, _ in history()]
    start = order.index(before) + 1 if before else 0
    return order[start : order.index(after) + 1] if after else []


def _check_baseline(conn: Connection) -> None:
    """A ledger made before migrations must be the baseline's: every table and column it has."""
    have = inspect(conn)
    missing = [
        f"{table}.{column}"
        for table, columns in _baseline_columns().items()
        for column in columns
        if not have.has_table(table) or column not in {c["name"] for c in have.get_columns(table)}
    ]
    if missing:
        raise SchemaError(
            f"this ledger was made before migrations by an older batch-ai and lacks {', '.join(missing[:10])}: "
            "it cannot be stamped with the baseline; upgrade it with the batch-ai release that made it first"
        )


def _baseline_columns() -> dict[str, list[str]]:
    """The baseline's tables and columns, read off the baseline applied to an empty database."""
    from alembic import command
    from sqlalchemy import create_engine

    scratch = create_engine("sqlite://")
    with scratch.begin() as conn:
        command.upgrade(_config(conn), BASELINE)
        have = inspect(conn)
        tables = {name: [c["name"] for c in have.get_columns(name)] for name in have.get_table_names()}
    scratch.dispose()
    return {name: columns for name, columns in tables.items() if name != VERSION_TABLE}


def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(Path(__file__).parent))


def _config(conn: Connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["connection"] = conn
    return config
