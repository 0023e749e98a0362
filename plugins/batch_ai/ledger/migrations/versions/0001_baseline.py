"""Baseline: the ledger's tables as they were when migrations began.

Records, jobs, audit, intake, runs, artifact versions and publications, with the source dates,
publish marks and keyset indexes.

A ledger created before migrations existed has exactly these tables: it is stamped with this
revision (after a check that its columns are these) and upgraded from here.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    _jobs()
    _records()
    _audit()
    _intake()
    _runs()
    _artifact_versions()
    _publications()


def _jobs() -> None:
    op.create_table(
        "batch_ai_jobs",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("token", sa.String(64), nullable=False, unique=True),
        sa.Column("workload", sa.String(100), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("provider", sa.String(30), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("provider_job_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("record_count", sa.Integer, nullable=False),
        sa.Column("details", sa.JSON, nullable=True),
        sa.Column("parent_id", PK, sa.ForeignKey("batch_ai_jobs.id"), nullable=True),
        sa.Column("adopted_by", sa.String(250), nullable=True),
        sa.Column("input_tokens", sa.Integer, nullable=True),
        sa.Column("output_tokens", sa.Integer, nullable=True),
        sa.Column("cost_usd", sa.Float, nullable=True),
        sa.Column("repeat_cost_usd", sa.Float, nullable=True),
        _at("created_at", nullable=False),
        _at("submitted_at"),
        _at("ended_at"),
    )
    op.create_index("ix_batch_ai_jobs_open", "batch_ai_jobs", ["workload", "status"])


def _records() -> None:
    op.create_table(
        "batch_ai_records",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("workload", sa.String(100), nullable=False),
        sa.Column("source_id", sa.String(200), nullable=False),
        sa.Column("prompt_version", sa.String(50), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("schema_version", sa.String(50), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(30), nullable=False),
        sa.Column("input", sa.JSON, nullable=False),
        sa.Column("provider", sa.String(30), nullable=False),
        sa.Column("job_id", PK, sa.ForeignKey("batch_ai_jobs.id"), nullable=True),
        sa.Column("custom_id", sa.String(64), nullable=True, unique=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error_kind", sa.String(50), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("validation_errors", sa.JSON, nullable=True),
        sa.Column("output", sa.JSON, nullable=True),
        sa.Column("input_tokens", sa.Integer, nullable=True),
        sa.Column("output_tokens", sa.Integer, nullable=True),
        sa.Column("cost_usd", sa.Float, nullable=True),
        sa.Column("last_run_id", sa.String(250), nullable=True),
        sa.Column("source_date", sa.Date, nullable=True),
        _at("created_at", nullable=False),
        _at("updated_at", nullable=False),
        _at("submitted_at"),
        _at("completed_at"),
        _at("published_at"),
        sa.Column("gated_run_id", sa.String(250), nullable=True),
        sa.UniqueConstraint(
            "workload", "source_id", "prompt_version", "model", "schema_version", name="uq_batch_ai_records_key"
        ),
    )
    op.create_index("ix_batch_ai_records_state", "batch_ai_records", ["workload", "state", "id"])
    op.create_index("ix_batch_ai_records_job", "batch_ai_records", ["job_id"])


def _audit() -> None:
    op.create_table(
        "batch_ai_audit",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("record_id", PK, sa.ForeignKey("batch_ai_records.id"), nullable=False),
        sa.Column("from_state", sa.String(30), nullable=True),
        sa.Column("to_state", sa.String(30), nullable=False),
        _at("at", nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=True),
        sa.Column("job_id", PK, nullable=True),
        sa.Column("attempt", sa.Integer, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
    )
    op.create_index("ix_batch_ai_audit_record", "batch_ai_audit", ["record_id"])


def _intake() -> None:
    op.create_table(
        "batch_ai_intake",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("workload", sa.String(100), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("row_number", sa.Integer, nullable=False),
        sa.Column("source_id", sa.String(200), nullable=True),
        sa.Column("record_id", PK, sa.ForeignKey("batch_ai_records.id"), nullable=False),
        sa.Column("disposition", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.UniqueConstraint("workload", "run_id", "row_number", name="uq_batch_ai_intake_row"),
    )
    op.create_index("ix_batch_ai_intake_source", "batch_ai_intake", ["workload", "run_id", "source_id"])


def _runs() -> None:
    op.create_table(
        "batch_ai_runs",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("workload", sa.String(100), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        _at("interval_start"),
        _at("interval_end"),
        _at("started_at", nullable=False),
        _at("finished_at"),
        sa.Column("extracted", sa.Integer, nullable=True),
        sa.Column("details", sa.JSON, nullable=True),
        sa.Column("report", sa.JSON, nullable=True),
        sa.UniqueConstraint("workload", "run_id", name="uq_batch_ai_runs_run"),
    )


def _artifact_versions() -> None:
    op.create_table(
        "batch_ai_artifact_versions",
        sa.Column("workload", sa.String(100), primary_key=True),
        sa.Column("kind", sa.String(20), primary_key=True),
        sa.Column("version", sa.String(50), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        _at("first_seen_at", nullable=False),
    )


def _publications() -> None:
    op.create_table(
        "batch_ai_publications",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("workload", sa.String(100), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("target", sa.String(1000), nullable=False),
        sa.Column("record_ids", sa.JSON, nullable=False),
        _at("created_at", nullable=False),
        _at("completed_at"),
    )
    op.create_index("ix_batch_ai_publications_open", "batch_ai_publications", ["workload", "completed_at"])


def downgrade() -> None:
    for table in (
        "batch_ai_publications",
        "batch_ai_artifact_versions",
        "batch_ai_runs",
        "batch_ai_intake",
        "batch_ai_audit",
        "batch_ai_records",
        "batch_ai_jobs",
    ):
        op.drop_table(table)
