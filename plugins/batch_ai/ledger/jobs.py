"""The ledger's provider jobs: planned before the paid call, submitted, split, adopted, collected.

A job row is written (``planned``) before the provider is called, with the token the provider
is given; everything after that is a move of the job and of its records in one transaction,
so a process that dies between any two statements leaves a ledger the next run can finish
(see :mod:`batch_ai.recovery`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert, or_, select, update

from batch_ai.ledger import tables as t
from batch_ai.ledger.common import Change, chunks, utcnow
from batch_ai.ledger.states import JobState, State


@dataclass
class Plan:
    """What ``make_jobs`` decides for the records a plan claimed: jobs (token, record ids) and
    records no job can take as they are (to review, with the reason)."""

    jobs: list[tuple[str, list[int]]] = field(default_factory=list)
    unsendable: list[Change] = field(default_factory=list)  # to review_required


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
        make_jobs: Callable[[list[Any]], Plan],
        *,
        limit: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> list[tuple[str, int]]:
        """Claim the queued records no live job holds, and write the jobs ``make_jobs`` groups
        them into (``planned``), before any paid call. Returns (token, size) pairs.

        On PostgreSQL the claim locks the rows and skips those another run is claiming, so a
        nightly run and a backfill over the same records never plan (and pay for) one twice.
        A record whose job a dead run planned is freed by :func:`batch_ai.recovery.adopt` first,
        once the provider has been asked for that job. ``limit`` caps the records this run
        submits, retries of its own records not counted.
        """
        with self.engine.begin() as conn:
            plan = make_jobs(self._claim(conn, key, run_id, limit))
            self.apply(conn, plan.unsendable, actor="batch_ai", run_id=run_id)
            now = utcnow()
            planned = []
            for token, record_ids in plan.jobs:
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
                for chunk in chunks(list(record_ids)):
                    conn.execute(
                        update(t.records)
                        .where(t.records.c.id.in_(chunk), t.records.c.state == State.QUEUED)
                        .values(job_id=job_id)
                    )
                planned.append((token, len(record_ids)))
        return planned

    def _claim(self, conn, key, run_id: str, limit: int | None) -> list[Any]:
        """The queued records no planned job holds, locked (PostgreSQL), at most ``limit`` new ones."""
        rc, jc, ac = t.records.c, t.jobs.c, t.audit.c
        taken = select(jc.id).where(jc.status == JobState.PLANNED)
        q = (
            select(rc.id, rc.source_id, rc.input, rc.attempts)
            .where(key.where(), rc.state == State.QUEUED)
            .where(or_(rc.job_id.is_(None), rc.job_id.not_in(taken)))
            .order_by(rc.id)
        )
        if self.is_postgres:
            q = q.with_for_update(skip_locked=True, of=t.records)
        records = list(conn.execute(q))
        if limit is None:
            return records
        sent = select(ac.record_id).distinct().where(ac.run_id == run_id, ac.to_state == State.SUBMITTED)
        in_run = set(conn.scalars(sent))
        room = max(0, limit - len(in_run))
        retries = [r for r in records if r.id in in_run]
        others = [r for r in records if r.id not in in_run][:room]
        return sorted(retries + others, key=lambda r: r.id)

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
        custom_ids: dict[int, str],
        run_id: str,
        actor: str,
        *,
        reason: str | None = None,
    ) -> None:
        """Record the provider's job id and move the job's queued records to ``submitted``.

        A record's attempt is its custom id: one sent again under the custom id it already has
        (in a smaller job split from one the provider refused) keeps its attempt count."""
        now = utcnow()
        rc = t.records.c
        with self.engine.begin() as conn:
            planned = conn.scalar(select(t.jobs.c.details).where(t.jobs.c.id == job_id)) or {}
            conn.execute(
                update(t.jobs)
                .where(t.jobs.c.id == job_id)
                .values(
                    provider_job_id=provider_job_id,
                    status=JobState.SUBMITTED,
                    submitted_at=now,
                    details={**planned, **details},
                )
            )
            current = {}
            for part in chunks(list(custom_ids)):
                current.update(
                    {r.id: r for r in conn.execute(select(rc.id, rc.attempts, rc.custom_id).where(rc.id.in_(part)))}
                )
            self.apply(
                conn,
                [
                    Change(
                        rid,
                        State.SUBMITTED,
                        reason or f"in provider job {provider_job_id}",
                        {
                            "custom_id": cid,
                            "submitted_at": now,
                            "attempts": current[rid].attempts + (0 if current[rid].custom_id == cid else 1),
                        },
                    )
                    for rid, cid in custom_ids.items()
                ],
                actor=actor,
                run_id=run_id,
                job_id=job_id,
            )

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
