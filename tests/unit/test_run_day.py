"""Which day a run reads when its params name none: scheduled runs and backfills their own day;
runs by hand their logical date's day when that night is over, else (the Trigger form left at
now, no logical date) the last night complete, as a nightly run of that moment would read.

The context is shaped as the Task SDK gives it (its DagRun has run_type and run_after, and no
triggered_by)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from airflow.utils.types import DagRunType

from batch_ai.stages.run import run_day

NIGHT = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 29, 10, 41, tzinfo=UTC)


def context(run_type, logical_date, run_after=NOW, dag=None):
    from airflow.sdk.api.datamodels._generated import DagRun

    run = DagRun.model_construct(run_type=run_type, logical_date=logical_date, run_after=run_after)
    return {"dag_run": run, "logical_date": logical_date, **({"dag": dag} if dag else {})}


@pytest.mark.parametrize(
    ("run_type", "logical_date", "day"),
    [
        (DagRunType.SCHEDULED, NIGHT, "2026-11-25"),
        (DagRunType.BACKFILL_JOB, NIGHT, "2026-11-25"),
        (DagRunType.MANUAL, NIGHT, "2026-11-25"),  # airflow dags test DAG DATE; airflow dags trigger -e DATE
        (DagRunType.MANUAL, NOW, "2026-11-28"),  # the Trigger form's logical date left at now
        (DagRunType.MANUAL, None, "2026-11-28"),  # no logical date (REST API, the form cleared)
    ],
)
def test_the_day_a_run_reads(run_type, logical_date, day):
    assert run_day(context(run_type, logical_date)) == day


def test_a_run_without_a_logical_date_never_needs_ds():
    ctx = context(DagRunType.MANUAL, None)
    assert "ds" not in ctx and run_day(ctx) == "2026-11-28"


def test_a_run_by_hand_reads_the_night_the_schedule_ran_last():
    """At 01:00 the 02:00 schedule's last complete night began two days before, not yesterday."""
    from airflow.timetables.interval import CronDataIntervalTimetable

    schedule = SimpleNamespace(timetable=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"))
    early = datetime(2026, 11, 29, 1, 0, tzinfo=UTC)
    assert run_day(context(DagRunType.MANUAL, None, run_after=early, dag=schedule)) == "2026-11-27"
    assert run_day(context(DagRunType.MANUAL, early, run_after=early, dag=schedule)) == "2026-11-27"
    assert run_day(context(DagRunType.MANUAL, None, dag=schedule)) == "2026-11-28"
    assert run_day(context(DagRunType.MANUAL, NIGHT, dag=schedule)) == "2026-11-25"
