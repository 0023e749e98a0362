"""The raw limits each stage is measured against, on the same data in the same run."""

from __future__ import annotations

import time
from pathlib import Path

import orjson


def parse_rate(paths: list[Path]) -> float:
    """Lines per second that orjson parses these JSON Lines files at (read from disk, split on \\n)."""
    started = time.perf_counter()
    count = 0
    for path in paths:
        with open(path, "rb") as fh:
            for line in fh:
                orjson.loads(line)
                count += 1
    return count / (time.perf_counter() - started)


def bulk_insert_rate(url: str, n: int) -> float:
    """Rows per second of a plain bulk insert (SQLAlchemy executemany, one transaction) of ``n`` rows
    shaped as the sink's into a scratch table of the same database."""
    import sqlalchemy as sa

    from batch_ai.ledger.sinks import sink_table
    from batch_ai.workloads import load_workload

    workload = load_workload("ticket_summaries")
    sink = workload.spec.sink
    table = sink_table("bench_raw_insert", sink.key, sink.columns, workload.output_schema)

    def row(i: int) -> dict:
        return {
            sink.key: f"T-{i}",
            "summary": "The customer reports a problem and asks for a refund.",
            "category": "billing",
            "sentiment": "negative",
            "language": "en",
            "action_items": ["Refund", "Confirm"],
            "publish_status": "published",
            "source_date": None,
            "record_id": i,
            "prompt_version": "v1",
            "schema_version": "v1",
            "model": "gpt-4o-mini",
            "run_id": "bench",
            "published_at": None,
        }

    engine = sa.create_engine(url)
    table.create(engine, checkfirst=True)
    spent = 0.0  # the inserts only, not building the rows
    with engine.begin() as conn:
        for start in range(0, n, 10_000):
            chunk = [row(i) for i in range(start, min(start + 10_000, n))]
            started = time.perf_counter()
            conn.execute(table.insert(), chunk)
            spent += time.perf_counter() - started
    rate = n / spent
    table.drop(engine)
    engine.dispose()
    return rate
