"""The ledger's bulk writes (COPY on PostgreSQL) store exactly what SQLAlchemy's own statements
store, for every kind of value a record carries, hostile text included."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import insert, select, update

from batch_ai.ledger import bulk_write
from batch_ai.ledger import tables as t

KEY = ["workload", "source_id", "prompt_version", "model", "schema_version"]
NOW = datetime(2026, 11, 29, 12, 30, 5, 123456, tzinfo=UTC)
HOSTILE = [
    "plain",
    "tab\there, newline\nthere, return\r, backslash \\ and \\N and \\t literally",
    "\\",
    "\\N",
    "",
    "quotes ' \" and a comma, ; -- DROP TABLE batch_ai_records;",
    "unicode: é ü 中文 \u2028 \u2029 \U0001f600",
    "%s %(x)s {0}",
]


def _record(i: int, text: str) -> dict:
    return {
        "workload": "copy_test",
        "source_id": f"S-{i}-{text[:20]}",
        "prompt_version": "v1",
        "model": "m",
        "schema_version": "v1",
        "content_hash": f"{i:064d}",
        "state": "queued",
        "input": {"text": text, "n": 10**20 + i, "f": 0.1 + i, "nested": [None, True, {"k\\": text}]},
        "provider": "openai",
        "attempts": i,
        "error_kind": None,
        "error_message": text if i % 2 else None,
        "validation_errors": None,
        "last_run_id": f"run {text}",
        "source_date": date(2026, 11, 1 + i % 28),
        "created_at": NOW,
        "updated_at": NOW,
    }


def _read(conn, ids) -> list[dict]:
    rows = conn.execute(select(t.records).where(t.records.c.id.in_(ids)).order_by(t.records.c.id)).mappings()
    return [{k: v for k, v in row.items() if k != "id"} for row in rows]


def test_inserts_and_updates_store_what_sqlalchemy_stores(ledger):
    with ledger.engine.begin() as conn:
        ours = bulk_write.insert_new(conn, t.records, [_record(i, s) for i, s in enumerate(HOSTILE)], KEY, ["id"])
        theirs = conn.execute(
            insert(t.records).returning(t.records.c.id),
            [{**_record(i, s), "workload": "copy_ref"} for i, s in enumerate(HOSTILE)],
        ).all()
        assert len(ours) == len(HOSTILE) == len(theirs)
        ours, theirs = [r.id for r in ours], [r.id for r in theirs]

        def same() -> None:
            mine = _read(conn, ours)
            reference = [{**r, "workload": "copy_test"} for r in _read(conn, theirs)]
            assert mine == reference

        same()
        # a second insert of the same keys inserts nothing (ON CONFLICT DO NOTHING)
        again = bulk_write.insert_new(conn, t.records, [_record(0, HOSTILE[0])], KEY, ["id"])
        assert again == []

        # updates: JSON (None included), text, integers, dates, a column set for all rows
        def change(i: int, s: str) -> dict:
            return {"state": "completed", "output": {"summary": s, "i": i} if i % 3 else None, "error_message": s}

        bulk_write.update_by_id(
            conn, t.records, [{"id": rid, **change(i, s)} for i, (rid, s) in enumerate(zip(ours, HOSTILE))], attempts=7
        )
        for i, (rid, s) in enumerate(zip(theirs, HOSTILE)):
            conn.execute(update(t.records).where(t.records.c.id == rid).values(attempts=7, **change(i, s)))
        same()


@pytest.mark.parametrize("rows", [0, 12_345])
def test_audit_rows_in_bulk(ledger, rows):
    with ledger.engine.begin() as conn:
        (rid,) = bulk_write.insert_new(conn, t.records, [_record(1, "x")], KEY, ["id"])[0]
        audit = [
            {"record_id": rid, "from_state": None, "to_state": "queued", "at": NOW, "actor": f"a\t{i}", "reason": "r"}
            for i in range(rows)
        ]
        bulk_write.insert_rows(conn, t.audit, audit)
        stored = conn.execute(select(t.audit.c.actor, t.audit.c.at).where(t.audit.c.record_id == rid)).all()
    assert sorted(a for a, _ in stored) == sorted(f"a\t{i}" for i in range(rows))
    assert all(at.replace(tzinfo=at.tzinfo or UTC) == NOW for _, at in stored)
