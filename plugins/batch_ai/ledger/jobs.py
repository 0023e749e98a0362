"""The ledger's provider jobs: planned before the paid call, submitted, split, adopted, collected.

A job row is written (``planned``) before the provider is called, with the token the provider
is given; everything after that is a move of the job and of its records in one transaction,
so a process that dies between any two statements leaves a ledger the next run can finish
(see :mod:`batch_ai.recovery`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import String, and_, bindparam, case, cast, func, insert, literal, or_, select, update

from batch_ai.ledger import tables as t
from batch_ai.ledger.bulk import STEP, in_set, keyset_pages
from batch_ai.ledger.common import Change, chunks, utcnow
from batch_ai.ledger.states import JobState, State


class Planner(Protocol):
    """What groups the records a plan claims into jobs, a page at a time (see :mod:`batch_ai.stages.plan`)."""

    def take(self, records: list[Any]) -> tuple[list[tuple[str, list[int]]], list[Change]]:
        """Jobs (token, record ids) complete after these records, and the changes sending records
        no job can take as they are to review."""

    def finish(self) -> list[tuple[str, list[int]]]:
        """The jobs still open once every record was taken."""


def next_custom_id():
    """A record's custom id for its next attempt, in SQL: as :func:`batch_ai.stages.submit.custom_id`."""
    rc = t.records.c
    return literal("r") + cast(rc.id, String) + literal("-a") + cast(rc.attempts + 1, String)


@dataclass(frozen=True)
class LineUsage:
    """What one result line cost, added to its job's totals when its record moves."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    repeat: bool = False  # a later attempt of its record (a retry or a rerun)


class JobsMixin:
    """The job half of :class:`batch_ai.ledger.store.Ledger` (it provides ``engine``, ``apply``)."""

    def plan_jobs(
        self,
        key,
        provider: str,
        run_id: str,
        planner: Planner,
        *,
        limit: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> list[tuple[str, int]]:
        """Claim the queued records no live job holds, a page at a time, and write the jobs the
        ``planner`` groups them into (``planned``), before any paid call, in one transaction.
        Returns (token, size) pairs.

        On PostgreSQL the claim locks the rows and skips those another run is claiming, so a
        nightly run and a backfill over the same records never plan (and pay for) one twice.
        A record whose job a dead run planned is freed by :func:`batch_ai.recovery.adopt` first,
        once the provider has been asked for that job. ``limit`` caps the records this run
        submits, retries of its own records not counted.
        """
        rc = t.records.c
        planned: list[tuple[str, int]] = []
        with self.engine.begin() as conn:
            now = utcnow()

            def write(jobs: list[tuple[str, list[int]]]) -> None:
                for token, record_ids in jobs:
                    job_id = self._insert_job(
                        conn,
                        token=token,
                        workload=key.workload,
                        run_id=run_id,
                        provider=provider,
                        model=key.model,
                        record_count=len(record_ids),
                        created_at=now,
                        details=details,
                    )
                    mine = and_(in_set(conn, rc.id, record_ids), rc.state == State.QUEUED)
                    conn.execute(update(t.records).where(mine).values(job_id=job_id))
                    planned.append((token, len(record_ids)))

            for page in self._claim(conn, key, run_id, limit):
                jobs, unsendable = planner.take(page)
                self.apply(conn, unsendable, actor="batch_ai", run_id=run_id)
                write(jobs)
            write(planner.finish())
        return planned

    def _claim(self, conn, key, run_id: str, limit: int | None) -> Iterator[list[Any]]:
        """Pages of the queued records no planned job holds, locked (PostgreSQL), in id order; at
        most ``limit`` new ones."""
        rc, jc, ac = t.records.c, t.jobs.c, t.audit.c
        taken = select(jc.id).where(jc.status == JobState.PLANNED)
        free = (
            select(rc.id, rc.source_id, rc.input, rc.attempts)
            .where(key.where(), rc.state == State.QUEUED)
            .where(or_(rc.job_id.is_(None), rc.job_id.not_in(taken)))
            .order_by(rc.id)
            .limit(STEP)
        )
        in_run, room = None, 0
        if limit is not None:
            sent = select(ac.record_id).distinct().where(ac.run_id == run_id, ac.to_state == State.SUBMITTED)
            in_run = set(conn.scalars(sent))
            room = max(0, limit - len(in_run))
        if self.is_postgres:
            free = free.with_for_update(skip_locked=True, of=t.records)
        for page in keyset_pages(free, rc.id, lambda q: list(conn.execute(q))):
            if in_run is not None:
                kept = [r for r in page if r.id in in_run]
                fresh = [r for r in page if r.id not in in_run][:room]
                room -= len(fresh)
                page = sorted(kept + fresh, key=lambda r: r.id)
            yield page

    @staticmethod
    def _insert_job(conn, **values) -> int:
        return conn.execute(
            insert(t.jobs).values(status=JobState.PLANNED, **values).returning(t.jobs.c.id)
        ).scalar_one()

    def claim_job(self, token: str, *, wait: bool = True):
        """Hold the job's claim (see :mod:`batch_ai.ledger.claims`) for a ``with`` block: only its
        holder may call the provider to create the job."""
        from batch_ai.ledger.claims import claim

        return claim(self.engine, token, wait=wait)

    # -- reading ---------------------------------------------------------------------------

    def job(self, token: str) -> Any:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.jobs).where(t.jobs.c.token == token)).first()
        if row is None:
            raise KeyError(f"no job with token {token!r} in the ledger")
        return row

    def job_records(self, job_id: int, state: State | None = None) -> list[Any]:
        rc = t.records.c
        q = select(rc.id, rc.source_id, rc.input, rc.attempts, rc.custom_id, rc.state, rc.cost_usd).where(
            rc.job_id == job_id
        )
        if state is not None:
            q = q.where(rc.state == state)
        with self.engine.connect() as conn:
            return list(conn.execute(q.order_by(rc.id)))

    def iter_job_records(self, job_id: int, state: State) -> Iterator[Any]:
        """A job's records in a state (id, input, attempts, custom_id), streamed in id order."""
        rc = t.records.c
        q = (
            select(rc.id, rc.input, rc.attempts, rc.custom_id)
            .where(rc.job_id == job_id, rc.state == state)
            .order_by(rc.id)
        )
        with self.engine.connect() as conn:
            yield from conn.execution_options(yield_per=STEP).execute(q)

    def job_pages(self, job_id: int, state: State) -> Iterator[list[Any]]:
        """A job's records in a state (id, custom_id), a page at a time in id order; each page read
        in its own transaction (the caller may move the records of one before it asks for the next)."""
        rc = t.records.c
        q = select(rc.id, rc.custom_id).where(rc.job_id == job_id, rc.state == state).order_by(rc.id).limit(STEP)
        return keyset_pages(q, rc.id, self._read)

    def job_attempts(self, job_id: int, state: State) -> list[Any]:
        """(id, attempts, custom_id) of a job's records in a state: what their custom ids are made of."""
        rc = t.records.c
        q = select(rc.id, rc.attempts, rc.custom_id).where(rc.job_id == job_id, rc.state == state).order_by(rc.id)
        with self.engine.connect() as conn:
            return list(conn.execute(q))

    def run_tokens(self, workload: str, run_id: str) -> list[str]:
        """Tokens of the top-level jobs the run planned, in order."""
        jc = t.jobs.c
        with self.engine.connect() as conn:
            return list(
                conn.scalars(
                    select(jc.token)
                    .where(jc.workload == workload, jc.run_id == run_id, jc.parent_id.is_(None))
                    .order_by(jc.id)
                )
            )

    def provider_job_ids(self, provider: str) -> list[str]:
        """Every provider job id the ledger holds for a provider."""
        jc = t.jobs.c
        with self.engine.connect() as conn:
            return list(
                conn.scalars(select(jc.provider_job_id).where(jc.provider == provider, jc.provider_job_id.is_not(None)))
            )

    def jobs_by_id(self, ids: Iterable[int]) -> list[Any]:
        ids = list(ids)
        out: list[Any] = []
        with self.engine.connect() as conn:
            for chunk in chunks(ids):
                out += list(conn.execute(select(t.jobs).where(t.jobs.c.id.in_(chunk))))
        return out

    def update_job(self, job_id: int, **values) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(**values))

    def _lock_row(self, q):
        return q.with_for_update() if self.is_postgres else q

    def mark_submitted(
        self,
        job_id: int,
        provider_job_id: str,
        details: dict,
        run_id: str,
        actor: str,
        *,
        reason: str | None = None,
    ) -> int:
        """Record the provider's job id and move the job's queued records to ``submitted``, each
        under the custom id it was sent with (:func:`batch_ai.stages.submit.custom_ids_for`), in
        set-based statements. Returns how many moved.

        A record's attempt is its custom id: one sent again under the custom id it already has
        (in a smaller job split from one the provider refused) keeps its attempt count."""
        now = utcnow()
        rc, jc = t.records.c, t.jobs.c
        with self.engine.begin() as conn:
            job = conn.execute(select(jc.details, jc.parent_id).where(jc.id == job_id)).one()
            conn.execute(
                update(t.jobs)
                .where(jc.id == job_id)
                .values(
                    provider_job_id=provider_job_id,
                    status=JobState.SUBMITTED,
                    submitted_at=now,
                    details={**(job.details or {}), **details},
                )
            )
            moving = and_(rc.job_id == job_id, rc.state == State.QUEUED)
            if self.is_postgres:
                conn.execute(select(rc.id).where(moving).with_for_update())
            if job.parent_id is None:
                sent_as, attempt = next_custom_id(), rc.attempts + 1
            else:  # split from a refused job: the custom id it had
                sent_as = func.coalesce(rc.custom_id, next_custom_id())
                attempt = rc.attempts + case((rc.custom_id.is_(None), 1), else_=0)
            ac = t.audit.c
            audit = select(
                rc.id,
                rc.state,
                literal(str(State.SUBMITTED)),
                bindparam(None, now, type_=ac.at.type),
                literal(actor),
                literal(run_id),
                literal(job_id),
                attempt,
                literal(reason or f"in provider job {provider_job_id}"),
            ).where(moving)
            columns = ["record_id", "from_state", "to_state", "at", "actor", "run_id", "job_id", "attempt", "reason"]
            conn.execute(insert(t.audit).from_select(columns, audit))
            values = {"state": State.SUBMITTED, "custom_id": sent_as, "attempts": attempt}
            return conn.execute(
                update(t.records).where(moving).values(**values, submitted_at=now, updated_at=now)
            ).rowcount

    def record_results(
        self, job_id: int, changes: Sequence[Any], usage: dict[int, LineUsage], *, actor: str, run_id: str
    ) -> list[Any]:
        """Move records of a job on from ``submitted`` (those another collect moved already are
        left alone) and add what their lines cost to the job, in one transaction: a collect killed
        half-way leaves every record either moved and paid for, or still ``submitted``."""
        jc = t.jobs.c
        with self.engine.begin() as conn:
            applied = self.apply(
                conn, changes, actor=actor, run_id=run_id, job_id=job_id, only_from=State.SUBMITTED, in_job=job_id
            )
            lines = [usage[c.record_id] for c in applied if c.record_id in usage]
            if lines:
                conn.execute(
                    update(t.jobs)
                    .where(jc.id == job_id)
                    .values(
                        input_tokens=func.coalesce(jc.input_tokens, 0) + sum(u.input_tokens for u in lines),
                        output_tokens=func.coalesce(jc.output_tokens, 0) + sum(u.output_tokens for u in lines),
                        cost_usd=func.coalesce(jc.cost_usd, 0.0) + sum(u.cost_usd for u in lines),
                        repeat_cost_usd=func.coalesce(jc.repeat_cost_usd, 0.0)
                        + sum(u.cost_usd for u in lines if u.repeat),
                    )
                )
        return applied

    def finish_job(self, job_id: int, status: str, details: dict[str, Any]) -> None:
        """A collected job's end: its final status and what the provider said about it."""
        jc = t.jobs.c
        with self.engine.begin() as conn:
            current = conn.scalar(select(jc.details).where(jc.id == job_id)) or {}
            conn.execute(
                update(t.jobs)
                .where(jc.id == job_id)
                .values(status=status, details={**current, **details}, ended_at=func.coalesce(jc.ended_at, utcnow()))
            )
