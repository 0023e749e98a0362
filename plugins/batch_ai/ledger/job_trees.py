"""Job trees and their recovery: the smaller jobs split from a job the provider refused, the jobs
a run must still finish, and the unfinished jobs of other runs that a run adopts or releases.

A job and the jobs split from it form a tree whose root is the job the plan made; the root's
token names the whole tree in the DAG (one mapped ``job`` task group each).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select, update

from batch_ai.ledger import tables as t
from batch_ai.ledger.common import Change, chunks, utcnow
from batch_ai.ledger.states import OPEN_JOBS, JobState, State


class JobTreesMixin:
    """The job-tree half of :class:`batch_ai.ledger.store.Ledger` (it provides ``engine``, ``apply``,
    ``jobs_by_id``, ``_insert_job`` and ``_lock_row``)."""

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

    def open_tokens(self, workload: str, run_id: str, round_no: int = 0) -> list[str]:
        """The tokens of the jobs this run must still finish in round ``round_no``: those it planned
        in that round and, in round 0, those it adopted, whose job (or a smaller job split from
        it) is planned or submitted. Smaller jobs are finished as part of the job they were split
        from, so only that one's token is given."""
        roots = self._run_roots(workload, run_id)
        mine = [
            r
            for r in roots
            if (r.adopted_by == run_id and round_no == 0)
            or (r.run_id == run_id and (r.details or {}).get("round", 0) == round_no)
        ]
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
            open_ids = list(
                conn.execute(
                    select(jc.id, jc.parent_id).where(
                        jc.workload == workload,
                        jc.provider == provider,
                        jc.model == model,
                        jc.status.in_(list(OPEN_JOBS)),
                    )
                )
            )
            parents = {
                row.id: row.parent_id
                for row in conn.execute(select(jc.id, jc.parent_id).where(jc.workload == workload))
            }
        roots = set()
        for row in open_ids:
            node = row.id
            while parents.get(node) is not None:
                node = parents[node]
            roots.add(node)
        jobs = [j for j in self.jobs_by_id(sorted(roots)) if j.run_id != run_id and j.adopted_by != run_id]
        return sorted(jobs, key=lambda j: j.id)

    def run_jobs(self, workload: str, run_id: str) -> list[Any]:
        """The run's top-level jobs and those it adopted, with every smaller job split from them."""
        return [job for root in self._run_roots(workload, run_id) for job in self.job_tree(root.id)]

    def _run_roots(self, workload: str, run_id: str) -> list[Any]:
        """The top-level jobs the run planned or adopted, oldest first."""
        jc = t.jobs.c
        mine = or_(jc.run_id == run_id, jc.adopted_by == run_id)
        q = select(t.jobs).where(jc.workload == workload, jc.parent_id.is_(None), mine).order_by(jc.id)
        with self.engine.connect() as conn:
            return list(conn.execute(q))

    # -- moves -----------------------------------------------------------------------------

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
            conn.execute(
                update(t.jobs)
                .where(jc.id == job_id)
                .values(
                    status=JobState.RELEASED, details={**(job.details or {}), "released": reason, "released_by": run_id}
                )
            )
            return conn.execute(
                update(t.records).where(rc.job_id == job_id, rc.state == State.QUEUED).values(job_id=None)
            ).rowcount

    def split_job(
        self,
        job,
        groups: Sequence[Sequence[int]],
        tokens: Sequence[str],
        details: Sequence[dict[str, Any]],
        refused: str,
        *,
        actor: str,
        run_id: str,
    ) -> None:
        """The provider refused ``job`` as a whole (its message: ``refused``): put its records
        into smaller jobs (``planned``), one per group, and mark the job ``split``."""
        rc, jc = t.records.c, t.jobs.c
        with self.engine.begin() as conn:
            current = conn.execute(self._lock_row(select(t.jobs).where(jc.id == job.id))).one()
            if current.status == JobState.SPLIT:
                return  # split already (by an earlier attempt of this task)
            for token, record_ids, child_details in zip(tokens, groups, details, strict=True):
                child = self._insert_job(
                    conn,
                    token=token,
                    workload=job.workload,
                    run_id=job.run_id,
                    provider=job.provider,
                    model=job.model,
                    record_count=len(record_ids),
                    created_at=utcnow(),
                    parent_id=job.id,
                    details=child_details,
                )
                reason = f"the provider refused job {job.token} as a whole ({refused}); sent again in {token}"
                self.apply(
                    conn,
                    [Change(rid, State.QUEUED, reason[:2000], {"job_id": child}) for rid in record_ids],
                    actor=actor,
                    run_id=run_id,
                    job_id=job.id,
                    only_from=State.SUBMITTED,
                    in_job=job.id,
                )
                for part in chunks(list(record_ids)):  # any not submitted (never the case today) follow too
                    conn.execute(update(t.records).where(rc.id.in_(part), rc.job_id == job.id).values(job_id=child))
            conn.execute(
                update(t.jobs)
                .where(jc.id == job.id)
                .values(
                    status=JobState.SPLIT, ended_at=utcnow(), details={**(current.details or {}), "refused": refused}
                )
            )

    def open_work(self, workload: str) -> list[Any]:
        """The workload's records still ``queued`` or ``submitted``, counted per job (``job_id``
        None: queued with no job), with the job's token, status, run and provider id."""
        rc, jc = t.records.c, t.jobs.c
        q = (
            select(
                rc.state,
                rc.job_id,
                func.count().label("records"),
                jc.token,
                jc.status,
                jc.run_id,
                jc.adopted_by,
                jc.provider_job_id,
            )
            .select_from(t.records.outerjoin(t.jobs, rc.job_id == jc.id))
            .where(rc.workload == workload, rc.state.in_([State.QUEUED, State.SUBMITTED]))
            .group_by(rc.state, rc.job_id, jc.token, jc.status, jc.run_id, jc.adopted_by, jc.provider_job_id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(q))
