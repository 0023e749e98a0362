"""The ledger: every record, job, run and state change of every workload, in one database.

:class:`Ledger` is a thin facade over one part per table family, each its own module:
records and their state changes (:mod:`.records`), intake (:mod:`.intake`), provider jobs
(:mod:`.jobs`, :mod:`.job_trees`), runs and their accounting (:mod:`.runs`), publications to files
(:mod:`.publications`), the table sinks (:mod:`.sinks`) and retention (:mod:`.retention`).
All SQL of the package lives in ``batch_ai.ledger``. Writes are bulk statements inside one
transaction per operation; state changes go through :func:`states.check_transitions` and leave
one audit row each.
"""

from __future__ import annotations

from sqlalchemy import Engine, Table, text

from batch_ai.ledger import migrations
from batch_ai.ledger.common import CHUNK, Change, IntakeRow, RecordKey, chunks, utcnow
from batch_ai.ledger.engine import ledger_url, make_engine
from batch_ai.ledger.intake import IntakeMixin
from batch_ai.ledger.job_trees import JobTreesMixin
from batch_ai.ledger.jobs import JobsMixin
from batch_ai.ledger.publications import PublicationsMixin
from batch_ai.ledger.records import RecordsMixin
from batch_ai.ledger.retention import RetentionMixin
from batch_ai.ledger.runs import RunsMixin
from batch_ai.ledger.sinks import SinksMixin

__all__ = ["CHUNK", "Change", "IntakeRow", "Ledger", "RecordKey", "chunks", "utcnow"]


class Ledger(
    RecordsMixin, IntakeMixin, JobsMixin, JobTreesMixin, RunsMixin, PublicationsMixin, SinksMixin, RetentionMixin
):
    def __init__(self, engine: Engine):
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"

    @classmethod
    def connect(cls, url=None) -> Ledger:
        """The ledger at ``url`` (default: :func:`ledger_url`), its schema upgraded when it is behind."""
        ledger = cls(make_engine(url or ledger_url()))
        migrations.ensure_current(ledger.engine)
        return ledger

    def create(self, table: Table) -> None:
        """Create a sink table when missing. On PostgreSQL under an advisory lock: two runs
        starting at once on a new database must not both create it."""
        with self.engine.begin() as conn:
            if self.is_postgres:
                conn.execute(text("select pg_advisory_xact_lock(hashtext('batch_ai.create_tables'))"))
            table.create(conn, checkfirst=True)

    def dispose(self) -> None:
        self.engine.dispose()
