"""Files sink: each publish writes one Parquet or JSONL file to Airflow object storage.

The publish is written down first (a publication: its file and records, see
:mod:`batch_ai.ledger.publications`), then the file is written under a temporary name and
renamed into place, then the records move to ``published``. Readers of the directory (which
skip names starting with ``_``) never see half a file; a publish killed before the rename leaves
its records ``completed`` for the next one, and one killed after it is finished by the next one,
so no record is written to two files. Another publish, even in the same run, writes another
file. Readers take, per key, the row with the latest ``source_date`` (then ``published_at``): a
file is an append-only log, never rewritten.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from typing import Any

from batch_ai.ledger.store import Ledger, RecordKey, utcnow

log = logging.getLogger(__name__)


def _expand(uri: str) -> str:
    def var(m: re.Match) -> str:
        try:
            return os.environ[m.group(1)]
        except KeyError:
            raise ValueError(f"sink uri {uri}: environment variable {m.group(1)} is not set") from None

    return re.sub(r"\$\{(\w+)\}", var, uri)


def file_name(run_id: str, record_ids: list[int], fmt: str) -> str:
    """One name per publish: the run, and a digest of the records it holds. A retried publish of
    the same records writes the same file again; a later publish in the same run (records a
    reviewer approved meanwhile) gets its own."""
    digest = hashlib.sha256(",".join(map(str, record_ids)).encode()).hexdigest()[:10]
    run = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_")
    return f"{run}-{digest}" + (".parquet" if fmt == "parquet" else ".jsonl")


def _encode(rows: list[dict[str, Any]], fmt: str, vectors: tuple[str, ...] = ()) -> bytes:
    if fmt == "jsonl":
        from batch_ai.providers.base import jsonl_line

        return b"".join(jsonl_line(r, default=_plain) for r in rows)
    if vectors:
        return _vector_parquet(rows, vectors)
    import pandas as pd

    frame = pd.DataFrame(rows)
    for col in frame.columns:  # nested outputs (lists, objects) as JSON text: one type per column
        if frame[col].map(lambda v: isinstance(v, (list, dict))).any():
            frame[col] = frame[col].map(lambda v: json.dumps(v, ensure_ascii=False) if v is not None else None)
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def _plain(value: Any) -> Any:
    """JSON for what the standard types do not cover: a vector as its list of numbers."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _vector_parquet(rows: list[dict[str, Any]], vectors: tuple[str, ...]) -> bytes:
    """Parquet whose vector columns are ``list<float32>``; the others as pyarrow infers them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(rows[0]) if rows else []
    columns = {
        name: pa.array([r[name] for r in rows], type=pa.list_(pa.float32()) if name in vectors else None)
        for name in names
    }
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def _row(sink, r, lineage: dict[str, Any], vectors: tuple[str, ...]) -> dict[str, Any]:
    """One published row: the key, the sink's columns (a vector decoded to float32), then the
    lineage columns the sink's own columns do not already name."""
    from batch_ai.validation.vectors import decode

    row = {sink.key: r.source_id}
    for c in sink.columns:
        value = (r.output or {}).get(c)
        row[c] = decode(value) if c in vectors and isinstance(value, str) else value
    row.update({k: v for k, v in lineage.items() if k not in row})
    return row


def publish(
    ledger: Ledger,
    key: RecordKey,
    sink,
    run_id: str,
    actor: str,
    gated_by: str | None = None,
    vectors: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Write the key's ready records to one new file (``vectors``: output fields holding an
    encoded embedding, written as ``list<float32>``)."""
    from airflow.sdk import ObjectStoragePath

    base = ObjectStoragePath(_expand(sink.uri).rstrip("/") + "/")
    settled = ledger.settle_publications(
        key.workload, lambda uri: ObjectStoragePath(uri).exists(), actor=actor, run_id=run_id
    )
    if any(settled.values()):
        log.warning("publications of earlier runs that died half-way: %s", settled)
    now = utcnow()
    target_for = lambda ids: str(base / file_name(run_id, ids, sink.format))  # noqa: E731
    with ledger.publication(key, run_id, target_for, gated_by) as (publication, records):
        if publication is None:
            log.info("nothing to publish to %s", base)
            return {"published": 0, "file": None}
        lineage = {
            "prompt_version": key.prompt_version,
            "schema_version": key.schema_version,
            "model": key.model,
            "run_id": run_id,
            "published_at": now.isoformat(),
        }
        rows = [
            _row(
                sink,
                r,
                {
                    "source_date": r.source_date.isoformat() if r.source_date else None,
                    "record_id": r.id,
                    "provider_request_id": r.provider_request_id,
                    **lineage,
                },
                vectors,
            )
            for r in records
        ]
        final = ObjectStoragePath(publication.target)
        base.mkdir(parents=True, exist_ok=True)
        tmp = base / f"_{final.name}.tmp"
        with tmp.open("wb") as fh:
            fh.write(_encode(rows, sink.format, vectors))
        tmp.rename(final)
        ledger.complete_publication(publication, f"written to {final}", actor=actor, run_id=run_id)
    log.info("published %d record(s) to %s", len(rows), final)
    return {"published": len(rows), "file": str(final)}
