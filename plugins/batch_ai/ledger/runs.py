"""The ledger's runs: when each started, what each stage noted, how every row ended up, the reports;
and the prompt and schema versions each workload has used."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from batch_ai.errors import WorkloadError
from batch_ai.ledger import tables as t
from batch_ai.ledger.common import utcnow
from batch_ai.ledger.states import State


class RunsMixin:
    """The run half of :class:`batch_ai.ledger.store.Ledger`."""

    def start_run(self, workload: str, run_id: str, interval_start=None, interval_end=None) -> None:
        rc = t.runs.c
        with self.engine.begin() as conn:
            exists = conn.execute(select(rc.id).where(rc.workload == workload, rc.run_id == run_id)).first()
            if exists is None:
                conn.execute(
                    insert(t.runs).values(
                        workload=workload,
                        run_id=run_id,
                        interval_start=interval_start,
                        interval_end=interval_end,
                        started_at=utcnow(),
                    )
                )
            else:  # extract again (a cleared run): the run starts over
                conn.execute(update(t.runs).where(rc.id == exists.id).values(started_at=utcnow()))

    def run_started_at(self, workload: str, run_id: str) -> datetime | None:
        rc = t.runs.c
        with self.engine.connect() as conn:
            return conn.scalar(select(rc.started_at).where(rc.workload == workload, rc.run_id == run_id))

    def set_extracted(self, workload: str, run_id: str, count: int) -> None:
        rc = t.runs.c
        with self.engine.begin() as conn:
            conn.execute(update(t.runs).where(rc.workload == workload, rc.run_id == run_id).values(extracted=count))

    def set_run_detail(self, workload: str, run_id: str, name: str, value: Any) -> None:
        rc = t.runs.c
        with self.engine.begin() as conn:
            q = select(rc.details).where(rc.workload == workload, rc.run_id == run_id)
            if self.is_postgres:
                q = q.with_for_update()
            details = dict(conn.scalar(q) or {})
            details[name] = value
            conn.execute(update(t.runs).where(rc.workload == workload, rc.run_id == run_id).values(details=details))

    def run_details(self, workload: str, run_id: str) -> dict[str, Any]:
        rc = t.runs.c
        with self.engine.connect() as conn:
            return dict(conn.scalar(select(rc.details).where(rc.workload == workload, rc.run_id == run_id)) or {})

    def finish_run(self, workload: str, run_id: str, report: dict) -> None:
        rc = t.runs.c
        with self.engine.begin() as conn:
            conn.execute(
                update(t.runs)
                .where(rc.workload == workload, rc.run_id == run_id)
                .values(finished_at=utcnow(), report=report)
            )

    def latest_report(self, workload: str) -> dict | None:
        rc = t.runs.c
        q = select(rc.report).where(rc.workload == workload, rc.report.is_not(None)).order_by(rc.finished_at.desc())
        with self.engine.connect() as conn:
            row = conn.execute(q.limit(1)).first()
        return row.report if row else None

    def finished_runs(self, workload: str | None = None) -> list[Any]:
        """Every finished run with a report (workload, run_id, interval_start, started_at, report),
        oldest first: what :mod:`batch_ai.costs` reads for the trend of the nights."""
        rc = t.runs.c
        q = select(rc.workload, rc.run_id, rc.interval_start, rc.started_at, rc.report).where(rc.report.is_not(None))
        if workload:
            q = q.where(rc.workload == workload)
        with self.engine.connect() as conn:
            return list(conn.execute(q.order_by(rc.started_at)))

    # -- accounting ------------------------------------------------------------------------

    def run_sent_to_review(self, workload: str, run_id: str) -> int:
        """How many of the workload's records the run sent to a person (moved to ``review_required``)."""
        ac, rc = t.audit.c, t.records.c
        q = (
            select(func.count(ac.record_id.distinct()))
            .select_from(t.audit.join(t.records, ac.record_id == rc.id))
            .where(ac.run_id == run_id, ac.to_state == State.REVIEW_REQUIRED, rc.workload == workload)
        )
        with self.engine.connect() as conn:
            return conn.scalar(q) or 0

    def run_accounting(self, workload: str, run_id: str) -> dict[str, Any]:
        """How every row the run extracted ends up: counts per record state plus duplicates."""
        ic, rc = t.intake.c, t.records.c
        of_run = (ic.workload == workload, ic.run_id == run_id)
        joined = t.intake.join(t.records, ic.record_id == rc.id)
        records = (*of_run, ic.disposition == "record")
        with self.engine.connect() as conn:
            extracted = (
                conn.scalar(select(t.runs.c.extracted).where(t.runs.c.workload == workload, t.runs.c.run_id == run_id))
                or 0
            )
            by_state = dict(
                conn.execute(
                    select(rc.state, func.count()).select_from(joined).where(*records).group_by(rc.state)
                ).all()
            )
            duplicates = conn.scalar(
                select(func.count()).select_from(t.intake).where(*of_run, ic.disposition == "duplicate")
            )
            errors = dict(
                conn.execute(
                    select(rc.error_kind, func.count())
                    .select_from(joined)
                    .where(*records, rc.error_kind.is_not(None))
                    .group_by(rc.error_kind)
                ).all()
            )
            retried = conn.scalar(select(func.count()).select_from(joined).where(*records, rc.attempts > 1))
        states = {str(s): by_state.pop(str(s), 0) for s in State}
        states["duplicate"] = duplicates
        # a state this module does not know would be a bug: show it rather than hide it
        states.update({f"unknown:{s}": n for s, n in by_state.items()})
        return {
            "extracted": extracted,
            "states": states,
            "lost": extracted - sum(states.values()),
            "error_kinds": errors,
            "retried": retried,
        }

    def run_records(self, workload: str, run_id: str) -> list[Any]:
        """The records a run's rows made (duplicates counted once), in row order."""
        ic = t.intake.c
        q = (
            select(t.records)
            .select_from(t.intake.join(t.records, ic.record_id == t.records.c.id))
            .where(ic.workload == workload, ic.run_id == run_id, ic.disposition == "record")
            .order_by(ic.row_number)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(q))

    def run_examples(
        self, workload: str, run_id: str, states: Sequence[State], per_state: int = 3
    ) -> dict[str, list[dict]]:
        """A few records of the run in each of ``states``, with why they are there."""
        ic, rc = t.intake.c, t.records.c
        out: dict[str, list[dict]] = {}
        with self.engine.connect() as conn:
            for state in states:
                rows = conn.execute(
                    select(rc.source_id, rc.error_message, ic.reason)
                    .select_from(t.intake.join(t.records, ic.record_id == rc.id))
                    .where(ic.workload == workload, ic.run_id == run_id, ic.disposition == "record", rc.state == state)
                    .order_by(rc.id)
                    .limit(per_state)
                ).all()
                # a dead letter's reason as this run read it (its file and line), not as first seen
                out.update(
                    {
                        str(state): [
                            {
                                "source_id": r.source_id,
                                "reason": (r.reason if state == State.DEAD_LETTER else None) or r.error_message,
                            }
                            for r in rows
                        ]
                    }
                    if rows
                    else {}
                )
        return out

    # -- prompt and schema versions ------------------------------------------------------------

    def check_artifact_versions(self, workload: str, artifacts: Iterable[tuple[str, str, str, str]]) -> None:
        """Remember the content hash of each (kind, version); fail if a version's content changed.

        ``artifacts`` holds ``(kind, version, sha256, path)``.
        """
        av = t.artifact_versions
        dialect_insert = postgresql.insert if self.is_postgres else sqlite.insert
        with self.engine.begin() as conn:
            for kind, version, sha, path in artifacts:
                # first use records the hash (a run starting at the same moment may record it too)
                conn.execute(
                    dialect_insert(av)
                    .values(
                        workload=workload, kind=kind, version=version, sha256=sha, path=path, first_seen_at=utcnow()
                    )
                    .on_conflict_do_nothing()
                )
                known = conn.execute(
                    select(av.c.sha256, av.c.first_seen_at).where(
                        av.c.workload == workload, av.c.kind == kind, av.c.version == version
                    )
                ).one()
                if known.sha256 != sha:
                    raise WorkloadError(
                        path,
                        f"this {kind} file changed since version {version!r} was first used by workload "
                        f"{workload!r} (on {known.first_seen_at:%Y-%m-%d}). Records already made under "
                        f"{version!r} used the old text, so the version must change with it: bump the "
                        f"{kind} version in the workload YAML (and keep the old file for history).",
                    )
