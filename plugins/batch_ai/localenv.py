"""A project-local Airflow for the demo and the tests: SQLite metadata DB, our dags/plugins."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def airflow_env(home: Path, *, ledger_url: str, data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for running the ``airflow`` CLI against this project, isolated in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "BATCH_AI_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            "BATCH_AI_LEDGER_URL": ledger_url,
            "BATCH_AI_DATA_DIR": str(data_dir),
            "BATCH_AI_MAX_WAIT_SECONDS": "1",  # the emulator finishes jobs in seconds
            "BATCH_AI_DEADLINE_ALERTS": "off",  # see batch_ai.deadlines.SWITCH
            "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO / "include")]),
        }
    )
    env.update(extra or {})
    return env


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a server that takes a port number (not a socket)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def migrate(env: dict[str, str]) -> None:
    """Create or upgrade the metadata DB (quick when it is already current)."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [airflow_bin(), "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def dags_test_command(dag_id: str, logical_date: str, conf: dict | None = None) -> list[str]:
    """``airflow dags test DAG DATE [-c CONF]``: one DAG run, in this process, as a user runs it."""
    return [airflow_bin(), "dags", "test", dag_id, logical_date, *(["-c", json.dumps(conf)] if conf else [])]


def dags_test(
    env: dict[str, str], dag_id: str, logical_date: str, log_path: Path, conf: dict | None = None
) -> subprocess.CompletedProcess:
    """``airflow dags test DAG DATE``, its output kept in ``log_path``; ``conf``: the run's params."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        return subprocess.run(
            dags_test_command(dag_id, logical_date, conf), env=env, stdout=log, stderr=subprocess.STDOUT
        )


@contextlib.contextmanager
def scratch_schema(url: str, prefix: str) -> Iterator[str]:
    """A PostgreSQL schema of its own in the database at ``url``, for one test or benchmark: its
    URL (the schema on the search path), and the schema dropped afterwards."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop schema "{schema}" cascade'))
        engine.dispose()
