"""Where the ledger lives: environment URL, the Airflow connection ``batch_ai_ledger``, or the default file."""

from __future__ import annotations

import pytest
from sqlalchemy import make_url, text

from batch_ai.ledger.engine import ledger_url, make_engine


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("BATCH_AI_LEDGER_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_BATCH_AI_LEDGER", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    return monkeypatch


def test_default_is_a_sqlite_file_beside_airflow_home(clean_env, tmp_path):
    url = ledger_url()
    assert url.get_backend_name() == "sqlite" and url.database == str(tmp_path / "home" / "batch_ai_ledger.sqlite")


def test_environment_url_wins(clean_env, tmp_path):
    clean_env.setenv("BATCH_AI_LEDGER_URL", f"sqlite:///{tmp_path}/x.sqlite")
    clean_env.setenv("AIRFLOW_CONN_BATCH_AI_LEDGER", "postgres://u:p@db:5432/ledger")
    assert ledger_url().database == f"{tmp_path}/x.sqlite"


def test_postgres_airflow_connection(clean_env, postgres_url):
    pg = make_url(postgres_url)
    clean_env.setenv("AIRFLOW_CONN_BATCH_AI_LEDGER", f"postgres://{pg.username}@{pg.host}:{pg.port}/{pg.database}")
    url = ledger_url()
    assert url.drivername == "postgresql+psycopg2" and url.database == pg.database
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("select current_database()")).scalar() == pg.database
    engine.dispose()


def test_unsupported_connection_type_is_named(clean_env):
    clean_env.setenv("AIRFLOW_CONN_BATCH_AI_LEDGER", "mysql://u:p@db:3306/ledger")
    with pytest.raises(ValueError, match="batch_ai_ledger.*mysql.*postgres or sqlite"):
        ledger_url()
