"""What the ledger's parts share: a record's key, a source row, a state change, bounded chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import and_

from batch_ai.ledger import tables as t
from batch_ai.ledger.states import State


def utcnow() -> datetime:
    return datetime.now(UTC)


CHUNK = 1000  # ids per IN (...) clause / rows per executemany


def chunks(items: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass(frozen=True)
class RecordKey:
    """The version part of a record's idempotency key (the rest is its source id)."""

    workload: str
    prompt_version: str
    model: str
    schema_version: str

    def where(self):
        c = t.records.c
        return and_(
            c.workload == self.workload,
            c.prompt_version == self.prompt_version,
            c.model == self.model,
            c.schema_version == self.schema_version,
        )


@dataclass
class IntakeRow:
    """One row read from the source, already checked by the extractor."""

    row_number: int
    source_id: str  # the row's id, or a key made from its content when it has none
    data: Any
    content_hash: str
    malformed: str | None = None  # why the row cannot be sent to a model
    source_date: date | None = None  # the day of the source file it was read from


@dataclass
class Change:
    """A state change of one record, with the columns that change along with it."""

    record_id: int
    to: State
    reason: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
