"""Publishing: completed records into the workload's sink, atomically per run and idempotently.

``sql_table`` upserts into a table in the ledger database (one transaction with the records'
move to ``published``); ``files`` writes one Parquet or JSONL file per publish to Airflow
object storage.
"""

from __future__ import annotations

from typing import Any

from batch_ai.ledger.store import Ledger
from batch_ai.workloads import Workload


def publish(workload: Workload, ledger: Ledger, run_id: str, actor: str, gated_by: str | None = None) -> dict[str, Any]:
    """Publish the workload's ``completed`` records (``gated_by``: those the quality gate of that
    run checked)."""
    if workload.spec.sink.kind == "files":
        from batch_ai.publish import files

        vectors = ("vector",) if workload.embeds else ()
        return files.publish(ledger, workload.record_key(), workload.spec.sink, run_id, actor, gated_by, vectors)
    from batch_ai.publish import sql_table

    return sql_table.publish(
        ledger, workload.record_key(), workload.spec.sink, workload.output_schema, run_id, actor, gated_by
    )


def mark_pending(workload: Workload, ledger: Ledger, key) -> int:
    """Show queued records as ``pending`` in a table sink (rows not published before)."""
    if workload.spec.sink.kind != "sql_table":
        return 0
    from batch_ai.publish import sql_table

    return sql_table.mark_pending(ledger, key, workload.spec.sink, workload.output_schema)
