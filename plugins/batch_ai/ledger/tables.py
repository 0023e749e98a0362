"""Ledger tables (SQLAlchemy Core). Work the same on SQLite and PostgreSQL.

A change here is a new revision in ``migrations/versions/`` (``tests/test_migrations.py`` fails
while the two differ)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# BigInteger primary keys autoincrement on PostgreSQL, Integer on SQLite (its rowid).
PK = BigInteger().with_variant(Integer(), "sqlite")

records = Table(
    "batch_ai_records",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    # idempotency key: one record per (workload, source id, prompt, model, schema) version
    Column("workload", String(100), nullable=False),
    Column("source_id", String(200), nullable=False),
    Column("prompt_version", String(50), nullable=False),
    Column("model", String(100), nullable=False),
    Column("schema_version", String(50), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("state", String(30), nullable=False),
    Column("input", JSON, nullable=False),
    Column("provider", String(30), nullable=False),
    Column("job_id", ForeignKey("batch_ai_jobs.id"), nullable=True),
    Column("custom_id", String(64), nullable=True, unique=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error_kind", String(50), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("validation_errors", JSON, nullable=True),
    Column("output", JSON, nullable=True),
    Column("input_tokens", Integer, nullable=True),
    Column("output_tokens", Integer, nullable=True),
    Column("cost_usd", Float, nullable=True),
    Column("last_run_id", String(250), nullable=True),
    # the day of the source data this content came from: a publish never replaces the
    # published result of newer data with that of older data
    Column("source_date", Date, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    Column("published_at", DateTime(timezone=True), nullable=True),
    # the run whose quality gate checked this output (cleared by any change of the record): a
    # publish takes exactly the records its run's gate checked
    Column("gated_run_id", String(250), nullable=True),
    # the provider's id of the request that gave the latest answer (each attempt's: on its audit row)
    Column("provider_request_id", String(200), nullable=True),
    UniqueConstraint(
        "workload", "source_id", "prompt_version", "model", "schema_version", name="uq_batch_ai_records_key"
    ),
    # the id last: a stage reads a state's records a page at a time, in id order
    Index("ix_batch_ai_records_state", "workload", "state", "id"),
    Index("ix_batch_ai_records_job", "job_id"),
)

jobs = Table(
    "batch_ai_jobs",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    # Our own id for the job, written before the paid call; also sent to the provider
    # (metadata, client token, display name) so a retried task can find the job again.
    Column("token", String(64), nullable=False, unique=True),
    Column("workload", String(100), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("provider", String(30), nullable=False),
    Column("model", String(100), nullable=False),
    Column("provider_job_id", String(200), nullable=True),
    Column("status", String(30), nullable=False),  # a states.JobState
    Column("record_count", Integer, nullable=False, default=0),
    Column("details", JSON, nullable=True),  # provider file ids, request counts, errors
    # a smaller job made from the records of a job the provider refused as a whole
    Column("parent_id", ForeignKey("batch_ai_jobs.id"), nullable=True),
    # the run that took the job over from the run that started it (and died), to finish it
    Column("adopted_by", String(250), nullable=True),
    Column("input_tokens", Integer, nullable=True),
    Column("output_tokens", Integer, nullable=True),
    Column("cost_usd", Float, nullable=True),
    Column("repeat_cost_usd", Float, nullable=True),  # of cost_usd: later attempts of records
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=True),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Index("ix_batch_ai_jobs_open", "workload", "status"),
)

audit = Table(
    "batch_ai_audit",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("record_id", ForeignKey("batch_ai_records.id"), nullable=False),
    Column("from_state", String(30), nullable=True),
    Column("to_state", String(30), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("run_id", String(250), nullable=True),
    Column("job_id", BigInteger().with_variant(Integer(), "sqlite"), nullable=True),
    Column("attempt", Integer, nullable=True),
    Column("reason", Text, nullable=True),
    Column("request_id", String(200), nullable=True),  # the provider's id of the request answered
    Index("ix_batch_ai_audit_record", "record_id"),
)

# One row per source row read by a run: how every extracted row is accounted for.
intake = Table(
    "batch_ai_intake",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("workload", String(100), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("row_number", Integer, nullable=False),
    Column("source_id", String(200), nullable=True),
    Column("record_id", ForeignKey("batch_ai_records.id"), nullable=False),
    Column("disposition", String(20), nullable=False),  # record | duplicate
    Column("reason", Text, nullable=True),
    UniqueConstraint("workload", "run_id", "row_number", name="uq_batch_ai_intake_row"),
    # a row repeated further down a big file is found among the rows already taken in
    Index("ix_batch_ai_intake_source", "workload", "run_id", "source_id"),
)

runs = Table(
    "batch_ai_runs",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("workload", String(100), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("interval_start", DateTime(timezone=True), nullable=True),
    Column("interval_end", DateTime(timezone=True), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("extracted", Integer, nullable=True),  # rows the extractor read, counted as it read them
    Column("details", JSON, nullable=True),  # per-stage summaries (sample, ...)
    Column("report", JSON, nullable=True),
    UniqueConstraint("workload", "run_id", name="uq_batch_ai_runs_run"),
)

# Content hash of each prompt/schema version the first time it was used: a file edited
# without a version bump is caught here.
artifact_versions = Table(
    "batch_ai_artifact_versions",
    metadata,
    Column("workload", String(100), primary_key=True),
    Column("kind", String(20), primary_key=True),  # prompt | schema
    Column("version", String(50), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("path", String(500), nullable=False),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
)

# A publish to files, written down before its file is: a publish killed between writing the file
# and moving its records to published is finished by the next one (the file is there) or
# undone (it is not), so a record is never written to two files.
publications = Table(
    "batch_ai_publications",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("workload", String(100), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("target", String(1000), nullable=False),  # the file's URI
    Column("record_ids", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    Index("ix_batch_ai_publications_open", "workload", "completed_at"),
)
