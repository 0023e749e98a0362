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
from batch_ai.ledger.states import OPEN_JOBS, JobState, State


@dataclass
class Plan:
    """What ``make_jobs`` decides for the records a plan claimed: jobs (token, record ids) and
    records no job can take as they are (to review, with the reason)."""

    jobs: list[tuple[str, list[int]]] = field(default_factory=list)
    dead: list[Change] = field(default_factory=list)  # to review_required


@dataclass(frozen=True)
class LineUsage:
    """What one result line cost, added to its job's totals when its record moves."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    repeat: bool = False  # a later attempt of its record (a retry or a rerun)


class JobsMixin:
    """The job half of :class:`batch_ai.ledger.store.Ledger` (it provides ``engine``, ``apply``)."""

    def plan_jobs(self, key, provider: str, run_id: str, make_jobs: Callable[[list[Any]], Plan], *,
                  limit: int | None = None, details: dict[str, Any] | None = None) -> list[tuple[str, int]]:
        """Claim the queued records no live job holds, and write the jobs ``make_jobs`` groups
        them into (``planned``), before any paid call. Returns (token, size) pairs.

        On PostgreSQL the claim locks the rows and skips those another run is claiming, so a
        nightly run and a backfill over the same records never plan (and pay for) one twice.
        A record whose job a dead run planned is freed by :func:`batch_ai.recovery.adopt` first,
        once the provider has been asked for that job. ``limit`` caps the records this run
        submits, retries of its own records not counted.
        """
        rc, jc, ac = t.records.c, t.jobs.c, t.audit.c
        now = utcnow()
        taken = select(jc.id).where(jc.status == JobState.PLANNED)
        q = (
            select(rc.id, rc.source_id, rc.input, rc.attempts)
            .where(key.where(), rc.state == State.QUEUED)
            .where(or_(rc.job_id.is_(None), rc.job_id.not_in(taken)))
            .order_by(rc.id)
        )
        if self.is_postgres:
            q = q.with_for_update(skip_locked=True, of=t.records)
        with self.engine.begin() as conn:
            records = list(conn.execute(q))
            if limit is not None:
                in_run = set(conn.scalars(select(ac.record_id).distinct().where(ac.run_id == run_id, ac.to_state == State.SUBMITTED)))
                room = max(0, limit - len(in_run))
                retries = [r for r in records if r.id in in_run]
                others = [r for r in records if r.id not in in_run][:room]
                records = sorted(retries + others, key=lambda r: r.id)
            plan = make_jobs(records)
            self.apply(conn, plan.dead, actor="batch_ai", run_id=run_id)
            planned = []
            for token, record_ids in plan.jobs:
                job_id = self._insert_job(conn, token=token, workload=key.workload, run_id=run_id, provider=provider,
                                          model=key.model, record_count=len(record_ids), created_at=now, details=details)
                for chunk in chunks(list(record_ids)):
                    conn.execute(update(t.records).where(rc.id.in_(chunk), rc.state == State.QUEUED).values(job_id=job_id))
                planned.append((token, len(record_ids)))
        return planned

    @staticmethod
    def _insert_job(conn, **values) -> int:
        return conn.execute(insert(t.jobs).values(status=JobState.PLANNED, **values).returning(t.jobs.c.id)).scalar_one()

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
        q = select(rc.id, rc.source_id, rc.input, rc.attempts, rc.custom_id, rc.state, rc.cost_usd).where(rc.job_id == job_id)
        if state is not None:
            q = q.where(rc.state == state)
        with self.engine.connect() as conn:
            return list(conn.execute(q.order_by(rc.id)))

    def job_tree(self, root_id: int) -> list[Any]:
        """A job and every smaller job split from it, parents before children."""
        jc = t.jobs.c
        tree: list[Any] = []
        level = [root_id]
        with self.engine.connect() as conn:
            tree += list(conn.execute(select(t.jobs).where(jc.id == root_id)))
            while level:
                children = list(conn.execute(select(t.jobs).where(jc.parent_id.in_(level)).order_by(jc.id)))
                tree += children
                level = [c.id for c in children]
        return tree

    def run_tokens(self, workload: str, run_id: str) -> list[str]:
        """Tokens of the top-level jobs the run planned, in order."""
        jc = t.jobs.c
        with self.engine.connect() as conn:
            return list(conn.scalars(select(jc.token).where(jc.workload == workload, jc.run_id == run_id,
                                                            jc.parent_id.is_(None)).order_by(jc.id)))

    def open_tokens(self, workload: str, run_id: str, round_no: int = 0) -> list[str]:
        """The tokens of the jobs this run must still finish in round ``round_no``: those it planned
        in that round and, in round 0, those it adopted, whose job (or a smaller job split from
        it) is planned or submitted. Smaller jobs are finished as part of the job they were split
        from, so only that one's token is given."""
        jc = t.jobs.c
        with self.engine.connect() as conn:
            roots = list(conn.execute(select(t.jobs).where(jc.workload == workload, jc.parent_id.is_(None),
                                                           or_(jc.run_id == run_id, jc.adopted_by == run_id))
                                      .order_by(jc.id)))
        mine = [r for r in roots if (r.adopted_by == run_id and round_no == 0)
                or (r.run_id == run_id and (r.details or {}).get("round", 0) == round_no)]
        return [root.token for root in mine if self._is_open(root)]

    def _is_open(self, root) -> bool:
        if root.status in OPEN_JOBS:
            return True
        return root.status == JobState.SPLIT and any(j.status in OPEN_JOBS for j in self.job_tree(root.id))

    def unfinished_jobs(self, workload: str, provider: str, model: str, run_id: str) -> list[Any]:
        """Top-level jobs of other runs (not adopted by this one) that are still open: planned,
        submitted, or split with an open smaller job. Oldest first."""
        jc = t.jobs.c
        with self.engine.connect() as conn:
            open_ids = list(conn.execute(select(jc.id, jc.parent_id).where(
                jc.workload == workload, jc.provider == provider, jc.model == model, jc.status.in_(list(OPEN_JOBS)))))
            parents = {row.id: row.parent_id for row in conn.execute(select(jc.id, jc.parent_id).where(jc.workload == workload))}
        roots = set()
        for row in open_ids:
            node = row.id
            while parents.get(node) is not None:
                node = parents[node]
            roots.add(node)
        jobs = [j for j in self.jobs_by_id(sorted(roots)) if j.run_id != run_id and j.adopted_by != run_id]
        return sorted(jobs, key=lambda j: j.id)

    def provider_job_ids(self, provider: str) -> list[str]:
        """Every provider job id the ledger holds for a provider."""
        jc = t.jobs.c
        with self.engine.connect() as conn:
            return list(conn.scalars(select(jc.provider_job_id).where(jc.provider == provider, jc.provider_job_id.is_not(None))))

    def jobs_by_id(self, ids: Iterable[int]) -> list[Any]:
        ids = list(ids)
        out: list[Any] = []
        with self.engine.connect() as conn:
            for chunk in chunks(ids):
                out += list(conn.execute(select(t.jobs).where(t.jobs.c.id.in_(chunk))))
        return out

    def run_jobs(self, workload: str, run_id: str) -> list[Any]:
        """The run's top-level jobs and those it adopted, with every smaller job split from them."""
        jc = t.jobs.c
        with self.engine.connect() as conn:
            roots = list(conn.scalars(select(jc.id).where(jc.workload == workload, jc.parent_id.is_(None),
                                                          or_(jc.run_id == run_id, jc.adopted_by == run_id))
                                      .order_by(jc.id)))
        return [job for root in roots for job in self.job_tree(root)]

    # -- moves -----------------------------------------------------------------------------

    def update_job(self, job_id: int, **values) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(**values))

    def adopt(self, job_id: int, run_id: str) -> None:
        """This run finishes the job (and every job split from it) that another run started."""
        self.update_job(job_id, adopted_by=run_id)

    def release_job(self, job_id: int, run_id: str, reason: str) -> int:
        """A planned job the provider does not have: free its records for planning again.
        Returns how many records it held. Does nothing if the job is no longer planned."""
        rc, jc = t.records.c, t.jobs.c
        with self.engine.begin() as conn:
            job = conn.execute(self._lock_row(select(t.jobs).where(jc.id == job_id))).one()
            if job.status != JobState.PLANNED:
                return 0
            conn.execute(update(t.jobs).where(jc.id == job_id).values(
                status=JobState.RELEASED, details={**(job.details or {}), "released": reason, "released_by": run_id}))
            return conn.execute(update(t.records).where(rc.job_id == job_id, rc.state == State.QUEUED)
                                .values(job_id=None)).rowcount

    def _lock_row(self, q):
        return q.with_for_update() if self.is_postgres else q

    def mark_submitted(self, job_id: int, provider_job_id: str, details: dict, custom_ids: dict[int, str], run_id: str,
                       actor: str, *, reason: str | None = None) -> None:
        """Record the provider's job id and move the job's queued records to ``submitted``.

        A record's attempt is its custom id: one sent again under the custom id it already has
        (in a smaller job split from one the provider refused) keeps its attempt count."""
        now = utcnow()
        rc = t.records.c
        with self.engine.begin() as conn:
            planned = conn.scalar(select(t.jobs.c.details).where(t.jobs.c.id == job_id)) or {}
            conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(
                provider_job_id=provider_job_id, status=JobState.SUBMITTED, submitted_at=now, details={**planned, **details}))
            current = {}
            for part in chunks(list(custom_ids)):
                current.update({r.id: r for r in conn.execute(select(rc.id, rc.attempts, rc.custom_id).where(rc.id.in_(part)))})
            self.apply(
                conn,
                [Change(rid, State.SUBMITTED, reason or f"in provider job {provider_job_id}",
                        {"custom_id": cid, "submitted_at": now,
                         "attempts": current[rid].attempts + (0 if current[rid].custom_id == cid else 1)})
                 for rid, cid in custom_ids.items()],
                actor=actor, run_id=run_id, job_id=job_id,
            )

    def split_job(self, job, groups: Sequence[Sequence[int]], tokens: Sequence[str], details: Sequence[dict[str, Any]],
                  refused: str, *, actor: str, run_id: str) -> None:
        """The provider refused ``job`` as a whole (its message: ``refused``): put its records
        into smaller jobs (``planned``), one per group, and mark the job ``split``."""
        rc, jc = t.records.c, t.jobs.c
        with self.engine.begin() as conn:
            current = conn.execute(self._lock_row(select(t.jobs).where(jc.id == job.id))).one()
            if current.status == JobState.SPLIT:
                return  # split already (by an earlier attempt of this task)
            for token, record_ids, child_details in zip(tokens, groups, details, strict=True):
                child = self._insert_job(conn, token=token, workload=job.workload, run_id=job.run_id, provider=job.provider,
                                         model=job.model, record_count=len(record_ids), created_at=utcnow(),
                                         parent_id=job.id, details=child_details)
                reason = f"the provider refused job {job.token} as a whole ({refused}); sent again in {token}"
                self.apply(conn, [Change(rid, State.QUEUED, reason[:2000], {"job_id": child}) for rid in record_ids],
                           actor=actor, run_id=run_id, job_id=job.id, only_from=State.SUBMITTED, in_job=job.id)
                for part in chunks(list(record_ids)):  # any not submitted (never the case today) follow too
                    conn.execute(update(t.records).where(rc.id.in_(part), rc.job_id == job.id).values(job_id=child))
            conn.execute(update(t.jobs).where(jc.id == job.id).values(
                status=JobState.SPLIT, ended_at=utcnow(), details={**(current.details or {}), "refused": refused}))

    def record_results(self, job_id: int, changes: Sequence[Any], usage: dict[int, LineUsage], *, actor: str,
                       run_id: str) -> list[Any]:
        """Move records of a job on from ``submitted`` (those another collect moved already are
        left alone) and add what their lines cost to the job, in one transaction: a collect killed
        half-way leaves every record either moved and paid for, or still ``submitted``."""
        jc = t.jobs.c
        with self.engine.begin() as conn:
            applied = self.apply(conn, changes, actor=actor, run_id=run_id, job_id=job_id, only_from=State.SUBMITTED,
                                 in_job=job_id)
            lines = [usage[c.record_id] for c in applied if c.record_id in usage]
            if lines:
                conn.execute(update(t.jobs).where(jc.id == job_id).values(
                    input_tokens=func.coalesce(jc.input_tokens, 0) + sum(u.input_tokens for u in lines),
                    output_tokens=func.coalesce(jc.output_tokens, 0) + sum(u.output_tokens for u in lines),
                    cost_usd=func.coalesce(jc.cost_usd, 0.0) + sum(u.cost_usd for u in lines),
                    repeat_cost_usd=func.coalesce(jc.repeat_cost_usd, 0.0) + sum(u.cost_usd for u in lines if u.repeat),
                ))
        return applied

    def finish_job(self, job_id: int, status: str, details: dict[str, Any]) -> None:
        """A collected job's end: its final status and what the provider said about it."""
        jc = t.jobs.c
        with self.engine.begin() as conn:
            current = conn.scalar(select(jc.details).where(jc.id == job_id)) or {}
            conn.execute(update(t.jobs).where(jc.id == job_id).values(
                status=status, details={**current, **details}, ended_at=func.coalesce(jc.ended_at, utcnow())))

    def open_work(self, workload: str) -> list[Any]:
        """The workload's records still ``queued`` or ``submitted``, counted per job (``job_id``
        None: queued with no job), with the job's token, status, run and provider id."""
        rc, jc = t.records.c, t.jobs.c
        q = (select(rc.state, rc.job_id, func.count().label("records"), jc.token, jc.status, jc.run_id, jc.adopted_by,
                    jc.provider_job_id)
             .select_from(t.records.outerjoin(t.jobs, rc.job_id == jc.id))
             .where(rc.workload == workload, rc.state.in_([State.QUEUED, State.SUBMITTED]))
             .group_by(rc.state, rc.job_id, jc.token, jc.status, jc.run_id, jc.adopted_by, jc.provider_job_id))
        with self.engine.connect() as conn:
            return list(conn.execute(q))

