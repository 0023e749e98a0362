"""Where the ledger lives.

In order: ``BATCH_AI_LEDGER_URL`` (any SQLAlchemy URL), the Airflow connection
``batch_ai_ledger`` (PostgreSQL or SQLite), else a SQLite file beside the Airflow home.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import URL, Engine, create_engine, event, make_url

log = logging.getLogger(__name__)

LEDGER_CONN_ID = "batch_ai_ledger"
ENV_URL = "BATCH_AI_LEDGER_URL"


def _url_from_airflow_connection() -> URL | None:
    try:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:  # not running under Airflow
        return None
    try:
        conn = BaseHook.get_connection(LEDGER_CONN_ID)
    except AirflowNotFoundException:
        return None
    if conn.conn_type in ("postgres", "postgresql"):
        return URL.create(
            "postgresql+psycopg2",
            username=conn.login,
            password=conn.password,
            host=conn.host,
            port=conn.port,
            database=conn.schema,
        )
    if conn.conn_type == "sqlite":
        return make_url(f"sqlite:///{conn.host}")
    raise ValueError(f"Airflow connection {LEDGER_CONN_ID!r} has type {conn.conn_type!r}; use postgres or sqlite")


def default_sqlite_path() -> Path:
    home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
    return home / "batch_ai_ledger.sqlite"


def ledger_url() -> URL:
    if os.environ.get(ENV_URL):
        return make_url(os.environ[ENV_URL])
    from_conn = _url_from_airflow_connection()
    if from_conn is not None:
        return from_conn
    path = default_sqlite_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_url(f"sqlite:///{path}")


def make_engine(url: URL | str) -> Engine:
    from batch_ai import jsonio

    url = make_url(url)
    # JSON columns through orjson (the ledger's hot paths read and write one per record)
    json_io = {"json_serializer": jsonio.dumps_text, "json_deserializer": jsonio.loads}
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30}, **json_io)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            dbapi_conn.isolation_level = None  # transactions are begun below, not by the driver

        # SQLite has no row locks: every transaction takes the write lock when it begins, so a
        # read-check-write (a review decision, a plan's claim) cannot interleave with another.
        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - trivial
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # executemany of an UPDATE as pages of statements (psycopg2's execute_batch), not one round trip a row
    return create_engine(
        url,
        pool_pre_ping=True,
        executemany_mode="values_plus_batch",
        executemany_batch_page_size=500,
        **json_io,
    )
