"""Shared fixtures: ledgers on SQLite and PostgreSQL, the provider emulator, a local Airflow."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
for p in (REPO / "plugins", REPO / "include"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from batch_ai.ledger.store import Ledger  # noqa: E402
from batch_ai.localenv import airflow_env, migrate, scratch_schema  # noqa: E402
from provider_emulator.launcher import Emulator  # noqa: E402

PG_URL = os.environ.get("BATCH_AI_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def _postgres_or_skip():
    """PostgreSQL for the tests that need it: skipped (with the reason) where it is absent, never in CI."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        return engine
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no PostgreSQL here"
        message = f"PostgreSQL is not reachable at {PG_URL}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must run the PostgreSQL tests)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory):
    """A local deployment (api-server, scheduler, dag-processor, triggerer, Celery worker, redis,
    the emulator, PostgreSQL): one per test session worker, shared by the tests of the ``stack``
    xdist group, stopped (by PID) and its database dropped at the end."""
    from stacked import required_binary, start

    _postgres_or_skip().dispose()
    required_binary("redis-server", "redis-server")
    stack, state, drop = start(tmp_path_factory.mktemp("deployment"), PG_URL)
    try:
        yield stack, state
    finally:
        drop()


@pytest.fixture
def postgres_url():
    """The test PostgreSQL's URL (skipped with the reason where there is none, failed in CI)."""
    _postgres_or_skip().dispose()
    return PG_URL


@contextlib.contextmanager
def empty_ledger_url(backend: str, tmp_path: Path):
    """A fresh, empty ledger database URL: a SQLite file, or a schema of its own in PostgreSQL."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        return
    _postgres_or_skip().dispose()
    with scratch_schema(PG_URL, "batch_ai_test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    """A fresh, empty ledger database URL on each backend."""
    with empty_ledger_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def ledger(ledger_url):
    led = Ledger.connect(ledger_url)
    yield led
    led.dispose()


@pytest.fixture
def emulator(tmp_path):
    """The provider emulator on a free 127.0.0.1 port, stopped after the test."""
    with Emulator(log_file=tmp_path / "emulator.log") as emu:
        yield emu


@pytest.fixture
def openai_conn(emulator, monkeypatch):
    """The Airflow connection ``openai_default`` pointing at the emulator (as environment)."""
    for key, value in emulator.airflow_env().items():
        monkeypatch.setenv(key, value)
    return emulator


@pytest.fixture
def aws(emulator):
    """boto3's bedrock, bedrock-runtime and s3 clients on the emulator (an S3 bucket ``batch`` made)."""
    import boto3
    from botocore.config import Config

    s = emulator.settings["bedrock"]
    kw = dict(region_name=s["region"], aws_access_key_id="test", aws_secret_access_key="test")
    s3 = boto3.client("s3", endpoint_url=s["s3_endpoint_url"], **kw)
    s3.create_bucket(Bucket="batch")
    bedrock = boto3.client(
        "bedrock", endpoint_url=s["endpoint_url"], config=Config(retries={"max_attempts": 3, "mode": "standard"}), **kw
    )
    runtime = boto3.client("bedrock-runtime", endpoint_url=s["endpoint_url"], **kw)
    return bedrock, runtime, s3


@pytest.fixture
def gcp(emulator, monkeypatch):
    """google-genai's Vertex AI client and google-cloud-storage on the emulator (bucket ``batch-in`` made)."""
    from google import genai
    from google.cloud import storage
    from google.genai import types
    from google.oauth2.credentials import Credentials

    s = emulator.settings["vertex"]
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", s["storage_emulator_host"])
    gcs = storage.Client(project=s["project"])
    gcs.create_bucket("batch-in")
    client = genai.Client(
        vertexai=True,
        project=s["project"],
        location=s["location"],
        credentials=Credentials(token="test-token"),
        http_options=types.HttpOptions(base_url=s["base_url"]),
    )
    return client, gcs


@pytest.fixture(scope="session")
def airflow_template(tmp_path_factory):
    """A migrated Airflow metadata DB, made once; each test gets its own copy."""
    home = tmp_path_factory.mktemp("airflow-template")
    env = airflow_env(home, ledger_url="sqlite://", data_dir=home)
    migrate(env)
    return home / "airflow.db"


@pytest.fixture
def airflow_home(airflow_template, tmp_path):
    home = tmp_path / "airflow"
    home.mkdir()
    shutil.copy(airflow_template, home / "airflow.db")
    return home


def pytest_terminal_summary(terminalreporter):
    """Print the DAG files' parse times recorded by test_dags.py."""
    lines = [
        value
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call"
        for name, value in report.user_properties
        if name == "parse_time"
    ]
    if lines:
        terminalreporter.section("DAG parse times")
        for line in sorted(lines):
            terminalreporter.write_line(f"  {line}")
