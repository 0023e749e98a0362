"""What a stage knows of its run: the run's id and day, and the params it was triggered with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from batch_ai.errors import StageError
from batch_ai.ledger.states import RERUN_STATES, State

#: Who the pipeline's own state changes are audited as.
ACTOR = "batch_ai"


@dataclass(frozen=True)
class RunParams:
    """What a run was asked to do beyond its nightly default: the DAG's params (the trigger form)."""

    date_from: date | None = None
    date_to: date | None = None
    rerun_states: tuple[State, ...] = ()
    prompt_version: str | None = None
    schema_version: str | None = None
    record_limit: int | None = None
    dry_run: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> RunParams:
        """Check the params; a bad one fails the task with the param named."""
        p = dict(params or {})
        problems = []

        def day(name: str) -> date | None:
            value = p.get(name)
            if value in (None, ""):
                return None
            try:
                return date.fromisoformat(str(value)[:10])
            except ValueError:
                problems.append(f"{name} {value!r} is not a date (YYYY-MM-DD)")
                return None

        date_from, date_to = day("date_from"), day("date_to")
        if (date_from is None) != (date_to is None) and not problems:
            date_from = date_to = date_from or date_to  # one day given: that day
        if date_from and date_to and date_from > date_to:
            problems.append(f"date_from {date_from} is after date_to {date_to}")
        states = p.get("rerun_states") or []
        if isinstance(states, str):
            states = [s.strip() for s in states.split(",") if s.strip()]
        bad = [s for s in states if s not in RERUN_STATES]
        if bad:
            problems.append(f"rerun_states {bad} are not states a backfill can rerun; choose from {RERUN_STATES}")
        limit = p.get("record_limit")
        if limit in ("", None):
            limit = None
        elif not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            problems.append(f"record_limit {limit!r} must be a positive integer")
            limit = None
        if problems:
            raise StageError("bad run params: " + "; ".join(problems))
        return cls(
            date_from=date_from,
            date_to=date_to,
            rerun_states=tuple(State(s) for s in states),
            prompt_version=p.get("prompt_version") or None,
            schema_version=p.get("schema_version") or None,
            record_limit=limit,
            dry_run=bool(p.get("dry_run")),
        )

    @property
    def overrides_versions(self) -> bool:
        return bool(self.prompt_version or self.schema_version)

    def days(self, ds: str) -> list[date]:
        """The days whose source files the run reads: the params' range, else the run's own day."""
        if self.date_from is None:
            return [date.fromisoformat(ds)]
        return [self.date_from + timedelta(days=n) for n in range((self.date_to - self.date_from).days + 1)]


@dataclass
class RunInfo:
    run_id: str
    ds: str
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    params: RunParams = field(default_factory=RunParams)


def _value(x: Any) -> str:
    return str(getattr(x, "value", x) or "")


def run_day(context: Mapping[str, Any]) -> str:
    """The day a run reads when its params name none (YYYY-MM-DD).

    A scheduled night and a backfill's day read their logical date's day (a nightly run's data
    interval starts on the day it processes). A run triggered by hand (``airflow dags test DAG
    DATE``, ``airflow dags trigger``, the REST API, the UI's Trigger form) reads its logical
    date's day when that night was over by the time the run was queued; otherwise (the Trigger
    form's logical date left at now, or no logical date at all, which Airflow 3 allows for manual
    runs) it reads what a nightly run of that moment would: the last night the DAG's schedule
    had complete by then. Both depend only on the run, so a cleared run reads the same day."""
    dag_run = context.get("dag_run")
    logical = context.get("logical_date")
    if logical is not None and _value(getattr(dag_run, "run_type", None)) != "manual":
        return logical.date().isoformat()
    moment = getattr(dag_run, "run_after", None) or logical or datetime.now(UTC)
    last = _last_night(context.get("dag"), moment)
    if logical is not None and logical.date() <= last:
        return logical.date().isoformat()
    return last.isoformat()


def _last_night(dag: Any, moment: datetime) -> date:
    """The day of the last night complete at ``moment``: the start of the schedule's last complete
    interval, or the day before (a DAG with no cron schedule)."""
    from airflow.timetables.interval import CronDataIntervalTimetable

    timetable = getattr(dag, "timetable", None)
    if isinstance(timetable, CronDataIntervalTimetable):
        return timetable.infer_manual_data_interval(run_after=moment).start.date()
    return (moment - timedelta(days=1)).date()
