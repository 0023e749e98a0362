"""Publications to files: the intent written before the file, the records moved after it.

A file cannot be written in the ledger's transaction, so a files publish is three steps:
the publication (its file and record ids) is committed first, then the file is written under a
temporary name and renamed, then the records move to ``published`` and the publication is
closed, in one transaction. The publisher holds the publication's claim throughout; a later
publish finishes a publication whose holder died (its file exists: its records are published)
or drops it (no file: its records are published anew), and never touches a live one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from batch_ai.ledger import tables as t
from batch_ai.ledger.common import Change, RecordKey, utcnow
from batch_ai.ledger.states import State


def claim_token(publication_id: int) -> str:
    return f"publication-{publication_id}"


class PublicationsMixin:
    """The publication half of :class:`batch_ai.ledger.store.Ledger`."""

    def open_publications(self, workload: str) -> list[Any]:
        pc = t.publications.c
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(t.publications).where(pc.workload == workload, pc.completed_at.is_(None)).order_by(pc.id)
                )
            )

    def held_by_open_publications(self, conn: Connection, workload: str) -> set[int]:
        """Record ids an unfinished publication of the workload holds (no other publish takes them)."""
        pc = t.publications.c
        rows = conn.execute(select(pc.record_ids).where(pc.workload == workload, pc.completed_at.is_(None)))
        return {rid for (ids,) in rows for rid in ids}

    def begin_publication(
        self, conn: Connection, workload: str, run_id: str, target: str, record_ids: Sequence[int]
    ) -> int:
        return conn.execute(
            insert(t.publications)
            .values(
                workload=workload,
                run_id=run_id,
                target=target,
                record_ids=list(record_ids),
                created_at=utcnow(),
            )
            .returning(t.publications.c.id)
        ).scalar_one()

    @contextlib.contextmanager
    def publication(
        self, key: RecordKey, run_id: str, target_for: Callable[[list[int]], str], gated_by: str | None = None
    ) -> Iterator[tuple[Any, list[Any]]]:
        """Write down a publication of the key's ready records (``gated_by``: those the gate of
        that run checked; none that another publication holds) and hold its claim for the ``with`` block:
        yields the publication (``None`` when nothing is ready) and its records. Its target is
        ``target_for(record ids)``."""
        with contextlib.ExitStack() as stack:
            with self.engine.begin() as conn:
                held = self.held_by_open_publications(conn, key.workload)
                records = [r for page in self.ready_to_publish(conn, key, gated_by) for r in page if r.id not in held]
                if records:
                    ids = [r.id for r in records]
                    publication_id = self.begin_publication(conn, key.workload, run_id, target_for(ids), ids)
                    # claimed before it is committed: no other publish ever sees it unclaimed while we live
                    stack.enter_context(self.claim_job(claim_token(publication_id)))
            if not records:
                yield None, []
                return
            publication = next(p for p in self.open_publications(key.workload) if p.id == publication_id)
            yield publication, records

    def complete_publication(self, publication, reason: str, *, actor: str, run_id: str) -> int:
        """Its file is written: move its records (those still ``completed``) to ``published``."""
        now = utcnow()
        with self.engine.begin() as conn:
            moved = self.apply(
                conn,
                [Change(rid, State.PUBLISHED, reason, {"published_at": now}) for rid in publication.record_ids],
                actor=actor,
                run_id=run_id,
                only_from=State.COMPLETED,
            )
            conn.execute(update(t.publications).where(t.publications.c.id == publication.id).values(completed_at=now))
        return len(moved)

    def drop_publication(self, publication_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(t.publications).where(t.publications.c.id == publication_id))

    def settle_publications(
        self, workload: str, file_exists: Callable[[str], bool], *, actor: str, run_id: str
    ) -> dict[str, int]:
        """Finish or drop the publications whose publisher died (their claim is free)."""
        outcome = {"finished": 0, "dropped": 0}
        for publication in self.open_publications(workload):
            with self.claim_job(claim_token(publication.id), wait=False) as free:
                if not free:
                    continue  # a live publish is writing it now
                if file_exists(publication.target):
                    self.complete_publication(
                        publication,
                        f"written to {publication.target} by a publish of run "
                        f"{publication.run_id} that died before it could say so",
                        actor=actor,
                        run_id=run_id,
                    )
                    outcome["finished"] += 1
                else:
                    self.drop_publication(publication.id)
                    outcome["dropped"] += 1
        return outcome
