"""Alembic's environment for the ledger: run on the connection the caller hands over (in its
transaction, under its lock), with the ledger's own version table."""

from __future__ import annotations

from alembic import context

from batch_ai.ledger import tables as t
from batch_ai.ledger.migrations import VERSION_TABLE, include_object

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=t.metadata,
    version_table=VERSION_TABLE,
    include_object=include_object,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters a table by copying it
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
