"""SQL table sink: published records upserted into a table keyed by source id, beside the
ledger (the SQL is the ledger's: :mod:`batch_ai.ledger.sinks`)."""

from __future__ import annotations

import logging
from typing import Any

from batch_ai.ledger.sinks import PENDING, PUBLISHED, REJECTED, sink_table
from batch_ai.ledger.store import Ledger, RecordKey

__all__ = ["PENDING", "PUBLISHED", "REJECTED", "mark_pending", "publish", "sink_table"]

log = logging.getLogger(__name__)


def mark_pending(ledger: Ledger, key: RecordKey, sink, output_schema: dict[str, Any]) -> int:
    """Show queued records as ``pending`` in the table (rows not published before)."""
    return ledger.mark_pending(key, sink, output_schema)


def publish(
    ledger: Ledger,
    key: RecordKey,
    sink,
    output_schema: dict[str, Any],
    run_id: str,
    actor: str,
    gated_by: str | None = None,
) -> dict[str, Any]:
    outcome = ledger.publish_to_table(key, sink, output_schema, run_id, actor, gated_by)
    log.info(
        "published %d record(s) to %s%s",
        outcome["published"],
        sink.table,
        f"; {outcome['superseded']} older result(s) not written over newer ones" if outcome["superseded"] else "",
    )
    return outcome
