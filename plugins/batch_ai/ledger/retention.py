"""What the retention policy prunes in the ledger: record payloads (to their hashes) and audit
rows, of records that are published or decided only; and which jobs still have files at the
provider. Every pruning statement is bounded (a page of ids at a time) and may run twice."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, cast, delete, func, not_, or_, select, update

from batch_ai import jsonio
from batch_ai.ledger import bulk_write
from batch_ai.ledger import tables as t
from batch_ai.ledger.bulk import STEP, in_set, keyset_pages
from batch_ai.ledger.common import utcnow
from batch_ai.ledger.states import TERMINAL, JobState

#: the key a pruned payload is marked with (the rest of it: the hash of what was there)
PRUNED = "_pruned"
#: jobs whose staged files may still be at the provider (a planned job never staged any)
_ENDED = [str(s) for s in JobState if s not in (JobState.PLANNED, JobState.SUBMITTED)]


def _size(value: Any) -> int:
    return len(jsonio.dumps(value)) if value is not None else 0


def _digest(value: Any) -> str:
    return hashlib.sha256(jsonio.dumps(value)).hexdigest()


class RetentionMixin:
    """The retention half of :class:`batch_ai.ledger.store.Ledger`."""

    def jobs_with_files(self, workload: str, ended_before: datetime) -> list[Any]:
        """Jobs of the workload that ended before then and whose staged files were not deleted yet."""
        j = t.jobs.c
        q = select(t.jobs).where(
            j.workload == workload, j.status.in_(_ENDED), j.ended_at < ended_before, j.provider_job_id.is_not(None)
        )
        with self.engine.connect() as conn:
            return [job for job in conn.execute(q.order_by(j.id)) if not (job.details or {}).get("files_deleted_at")]

    def files_deleted(self, job_id: int, deleted: list[str], size: int) -> None:
        """Note on the job that its staged files are gone (and what they were), so it is not asked twice."""
        j = t.jobs.c
        with self.engine.begin() as conn:
            details = conn.scalar(select(j.details).where(j.id == job_id)) or {}
            note = {"files_deleted_at": utcnow().isoformat(), "files_deleted": deleted, "bytes_deleted": size}
            conn.execute(update(t.jobs).where(j.id == job_id).values(details={**details, **note}))

    def prune_payloads(self, workload: str, before: datetime, *, dry_run: bool) -> dict[str, int]:
        """Replace the input and output of published and decided records last changed before then
        with a mark holding their hashes; returns how many records and payload bytes."""
        rc = t.records.c
        q = (
            select(rc.id, rc.input, rc.output, rc.content_hash)
            .where(*self._pruneable(workload, before))
            .where(not_(cast(rc.input, String).like(f'%"{PRUNED}"%')))
            .order_by(rc.id)
            .limit(STEP)
        )
        done = {"records": 0, "bytes": 0}
        for page in self._pages(q):
            stamp = utcnow().date().isoformat()
            done["records"] += len(page)
            done["bytes"] += sum(
                len(jsonio.dumps(r.input)) + (len(jsonio.dumps(r.output)) if r.output else 0) for r in page
            )
            if dry_run:
                continue
            values = [
                {
                    "id": r.id,
                    "input": {PRUNED: stamp, "content_hash": r.content_hash},
                    "output": {PRUNED: stamp, "sha256": _digest(r.output)} if r.output is not None else None,
                }
                for r in page
            ]
            with self.engine.begin() as conn:
                bulk_write.update_by_id(conn, t.records, values)
        return done

    def prune_audit(self, workload: str, before: datetime, *, dry_run: bool) -> dict[str, int]:
        """Delete the audit rows older than then of the workload's published and decided records;
        returns how many rows and bytes of their text."""
        a, rc = t.audit.c, t.records.c
        settled = select(rc.id).where(*self._pruneable(workload, None))
        old = and_(a.at < before, a.record_id.in_(settled.scalar_subquery()))
        q = select(a.id, func.coalesce(func.length(a.reason), 0).label("size")).where(old).order_by(a.id).limit(STEP)
        done = {"rows": 0, "bytes": 0}
        for page in self._pages(q):
            done["rows"] += len(page)
            done["bytes"] += sum(r.size for r in page)
            if not dry_run:
                with self.engine.begin() as conn:
                    conn.execute(delete(t.audit).where(in_set(conn, a.id, [r.id for r in page])))
        return done

    @staticmethod
    def _pruneable(workload: str, before: datetime | None) -> list[Any]:
        rc = t.records.c
        terms = [rc.workload == workload, rc.state.in_([str(s) for s in TERMINAL])]
        if before is not None:
            terms.append(or_(rc.updated_at < before, rc.updated_at.is_(None)))
        return terms

    def _pages(self, query) -> Iterator[list[Any]]:
        """Pages of ``query``'s rows by id, each read in a transaction of its own (pruning a page
        before the next is read is what keyset pages allow)."""

        def fetch(q) -> list[Any]:
            with self.engine.connect() as conn:
                return list(conn.execute(q))

        return keyset_pages(query, query.selected_columns[0], fetch)
