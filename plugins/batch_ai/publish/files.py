"""Files sink: each publish writes one Parquet or JSONL file to Airflow object storage.

The file is written under a temporary name and renamed into place, and the records move to
``published`` in the transaction that commits after the rename: readers of the directory
(which skip names starting with ``_``) never see half a file, and a failed publish leaves
its records ``completed`` for the next one. A retried publish of the same records writes the
same file name; another publish, even in the same run, writes another file. Readers take, per key, the row with the latest ``source_date`` (then
``published_at``): a file is an append-only log, never rewritten.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from typing import Any

from batch_ai.ledger.states import State
from batch_ai.ledger.store import Change, Ledger, RecordKey, utcnow

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


def _encode(rows: list[dict[str, Any]], fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows).encode()
    import pandas as pd

    frame = pd.DataFrame(rows)
    for col in frame.columns:  # nested outputs (lists, objects) as JSON text: one type per column
        if frame[col].map(lambda v: isinstance(v, (list, dict))).any():
            frame[col] = frame[col].map(lambda v: json.dumps(v, ensure_ascii=False) if v is not None else None)
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def publish(ledger: Ledger, key: RecordKey, sink, run_id: str, actor: str,
            only: list[int] | None = None) -> dict[str, Any]:
    from airflow.sdk import ObjectStoragePath

    base = ObjectStoragePath(_expand(sink.uri).rstrip("/") + "/")
    now = utcnow()
    with ledger.engine.begin() as conn:
        records = ledger.lock_ready(conn, key, only)  # a concurrent publish takes the others
        if not records:
            log.info("nothing to publish to %s", base)
            return {"published": 0, "file": None}
        name = file_name(run_id, [r.id for r in records], sink.format)
        rows = [
            {
                sink.key: r.source_id,
                **{c: (r.output or {}).get(c) for c in sink.columns},
                "source_date": r.source_date.isoformat() if r.source_date else None,
                "record_id": r.id,
                "prompt_version": key.prompt_version,
                "schema_version": key.schema_version,
                "model": key.model,
                "run_id": run_id,
                "published_at": now.isoformat(),
            }
            for r in records
        ]
        ledger.apply(conn, [Change(r.id, State.PUBLISHED, f"written to {base / name}", {"published_at": now}) for r in records],
                     actor=actor, run_id=run_id)
        base.mkdir(parents=True, exist_ok=True)
        tmp, final = base / f"_{name}.tmp", base / name
        with tmp.open("wb") as fh:
            fh.write(_encode(rows, sink.format))
        tmp.rename(final)
    log.info("published %d record(s) to %s", len(rows), final)
    return {"published": len(rows), "file": str(final)}
