"""The ledger's migrations (Alembic), on SQLite and PostgreSQL: the revisions build exactly the
tables the code uses; a ledger made before migrations, with data in it, is stamped and upgraded
with nothing lost; two processes upgrading at once upgrade once; ``python -m batch_ai db``."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from batch_ai.ledger import migrations
from batch_ai.ledger import tables as t
from batch_ai.ledger.engine import make_engine
from batch_ai.ledger.store import Ledger
from batch_ai.localenv import REPO
from conftest import empty_ledger_url

BACKENDS = ["sqlite", "postgresql"]
NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def test_head_is_the_newest_revision_and_there_is_one_line_of_them():
    scripts = ScriptDirectory(str(REPO / "plugins" / "batch_ai" / "ledger" / "migrations"))
    assert scripts.get_heads() == [migrations.HEAD]
    assert [rev for rev, _ in migrations.history()] == ["0001", "0002"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_revisions_build_exactly_the_tables_the_code_uses(backend, tmp_path):
    with empty_ledger_url(backend, tmp_path) as url:
        engine = make_engine(url)
        assert migrations.upgrade(engine) == ["0001", "0002"]
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"include_object": migrations.include_object, "compare_type": True}
            )
            assert compare_metadata(context, t.metadata) == []
        engine.dispose()


def _pre_migration_ledger(url: str) -> None:
    """A ledger as the code before migrations left it: the baseline's tables, no version table,
    a record with its job, audit, intake and run rows."""
    engine = make_engine(url)
    with engine.begin() as conn:
        command.upgrade(migrations._config(conn), migrations.BASELINE)
        conn.execute(sa.text(f"drop table {migrations.VERSION_TABLE}"))
        conn.execute(
            sa.text(
                "insert into batch_ai_jobs (token, workload, run_id, provider, model, provider_job_id, status,"
                " record_count, details, created_at) values ('tok1', 'ticket_summaries', 'run1', 'openai',"
                " 'gpt-4o-mini', 'batch_1', 'completed', 1, :details, :now)"
            ),
            {"details": '{"input_file_id": "file-1"}', "now": NOW},
        )
        conn.execute(
            sa.text(
                "insert into batch_ai_records (workload, source_id, prompt_version, model, schema_version,"
                " content_hash, state, input, provider, job_id, custom_id, attempts, output, cost_usd,"
                " source_date, created_at, updated_at, gated_run_id)"
                " values ('ticket_summaries', 'T-1', 'v1', 'gpt-4o-mini', 'v1', :hash, 'completed', :input,"
                " 'openai', 1, 'r1-a1', 1, :output, 0.0001, :day, :now, :now, 'run1')"
            ),
            {
                "hash": "a" * 64,
                "input": '{"ticket_id": "T-1", "body": "Hello"}',
                "output": '{"summary": "Hi"}',
                "day": date(2026, 11, 19),
                "now": NOW,
            },
        )
        conn.execute(
            sa.text(
                "insert into batch_ai_audit (record_id, from_state, to_state, at, actor, run_id, job_id, attempt,"
                " reason) values (1, 'submitted', 'completed', :now, 'batch-ai', 'run1', 1, 1, 'valid output')"
            ),
            {"now": NOW},
        )
        conn.execute(
            sa.text(
                "insert into batch_ai_intake (workload, run_id, row_number, source_id, record_id, disposition)"
                " values ('ticket_summaries', 'run1', 1, 'T-1', 1, 'record')"
            )
        )
        conn.execute(
            sa.text(
                "insert into batch_ai_runs (workload, run_id, started_at) values ('ticket_summaries', 'run1', :now)"
            ),
            {"now": NOW},
        )
    engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_ledger_made_before_migrations_is_upgraded_with_nothing_lost(backend, tmp_path):
    with empty_ledger_url(backend, tmp_path) as url:
        _pre_migration_ledger(url)
        ledger = Ledger.connect(url)  # what every task does first
        with ledger.engine.connect() as conn:
            assert migrations.current(conn) == migrations.HEAD
        rec = ledger.record(1)
        assert (rec.source_id, rec.state, rec.custom_id, rec.attempts, rec.gated_run_id) == (
            "T-1",
            "completed",
            "r1-a1",
            1,
            "run1",
        )
        assert rec.input == {"ticket_id": "T-1", "body": "Hello"} and rec.output == {"summary": "Hi"}
        assert rec.source_date == date(2026, 11, 19) and rec.provider_request_id is None
        assert ledger.job("tok1").details == {"input_file_id": "file-1"}
        with ledger.engine.connect() as conn:
            counts = [conn.scalar(sa.select(sa.func.count()).select_from(x)) for x in (t.audit, t.intake, t.runs)]
            assert counts == [1, 1, 1]
            assert conn.scalar(sa.select(t.audit.c.reason)) == "valid output"
        ledger.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_ledger_unlike_the_baseline_is_refused_with_what_it_lacks(backend, tmp_path):
    with empty_ledger_url(backend, tmp_path) as url:
        _pre_migration_ledger(url)
        engine = make_engine(url)
        with engine.begin() as conn:  # a ledger from before publish marks
            conn.execute(sa.text("alter table batch_ai_records drop column gated_run_id"))
        with pytest.raises(migrations.SchemaError, match=r"lacks batch_ai_records\.gated_run_id"):
            Ledger.connect(url)
        with engine.connect() as conn:
            assert migrations.current(conn) is None, "nothing was stamped"
        engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_tasks_starting_at_once_upgrade_once(backend, tmp_path):
    with empty_ledger_url(backend, tmp_path) as url:
        _pre_migration_ledger(url)
        engines = [make_engine(url) for _ in range(2)]
        applied, errors = [], []

        def upgrade(engine):
            try:
                applied.append(migrations.upgrade(engine))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=upgrade, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sorted(applied) == [[], ["0002"]]
        for engine in engines:
            engine.dispose()


def test_the_db_command_upgrades_and_says_where_the_ledger_is(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"

    def db(*args) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "batch_ai", "db", *args, "--ledger-url", url],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={"PYTHONPATH": f"{REPO / 'plugins'}:{REPO / 'include'}", "PATH": "/usr/bin:/bin"},
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "is at no revision; head is 0002" in db("current")
    assert db("upgrade").splitlines() == ["applied 0001, 0002", f"ledger {url} is at 0002 (head)"]
    assert db("upgrade").splitlines()[0] == "nothing to do"
    assert "0002  Provider request ids, per attempt." in db("history")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_sink_table_made_before_a_lineage_column_gains_it_with_its_rows_kept(backend, tmp_path):
    from batch_ai.workloads import load_workload

    workload = load_workload("ticket_summaries")
    sink = workload.spec.sink
    with empty_ledger_url(backend, tmp_path) as url:
        ledger = Ledger.connect(url)
        with ledger.engine.begin() as conn:  # the table as an earlier version made it
            conn.execute(
                sa.text(
                    f'create table "{sink.table}" ("{sink.key}" varchar(200) primary key, summary text,'
                    " publish_status varchar(20) not null, source_date date, record_id bigint not null,"
                    " prompt_version varchar(50) not null, schema_version varchar(50) not null,"
                    " model varchar(100) not null, run_id varchar(250) not null, published_at timestamp)"
                )
            )
            conn.execute(
                sa.text(
                    f"insert into \"{sink.table}\" values ('T-1', 'Hi', 'published', null, 1, 'v1', 'v1',"
                    " 'gpt-4o-mini', 'run1', null)"
                )
            )
        table = ledger.sink_table(sink, workload.output_schema)
        with ledger.engine.connect() as conn:
            assert "provider_request_id" in {c["name"] for c in sa.inspect(conn).get_columns(sink.table)}
            row = conn.execute(sa.select(table.c[sink.key], table.c.summary, table.c.provider_request_id)).one()
        assert tuple(row) == ("T-1", "Hi", None)
        ledger.dispose()
