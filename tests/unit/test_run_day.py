"""Which day a run reads when its params name none: scheduled and test runs their own day, runs
triggered by hand (with or without a logical date) the last complete day, as a nightly run would."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from airflow.utils.types import DagRunTriggeredByType, DagRunType

from batch_ai.stages.run import run_day

NIGHT = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 29, 10, 41, tzinfo=UTC)


def context(run_type, triggered_by, logical_date, run_after=NOW):
    run = SimpleNamespace(run_type=run_type, triggered_by=triggered_by, run_after=run_after)
    return {"dag_run": run, "logical_date": logical_date}


@pytest.mark.parametrize(
    ("run_type", "triggered_by", "logical_date", "day"),
    [
        (DagRunType.SCHEDULED, DagRunTriggeredByType.TIMETABLE, NIGHT, "2026-11-25"),
        (DagRunType.BACKFILL_JOB, DagRunTriggeredByType.BACKFILL, NIGHT, "2026-11-25"),
        (DagRunType.MANUAL, DagRunTriggeredByType.TEST, NIGHT, "2026-11-25"),  # airflow dags test DAG DATE
        (DagRunType.MANUAL, DagRunTriggeredByType.UI, NOW, "2026-11-28"),  # the Trigger form left at now
        (DagRunType.MANUAL, DagRunTriggeredByType.REST_API, None, "2026-11-28"),  # no logical date
        (DagRunType.MANUAL, DagRunTriggeredByType.CLI, None, "2026-11-28"),  # airflow dags trigger
    ],
)
def test_the_day_a_run_reads(run_type, triggered_by, logical_date, day):
    assert run_day(context(run_type, triggered_by, logical_date)) == day


def test_a_run_without_a_logical_date_never_needs_ds():
    ctx = context(DagRunType.MANUAL, DagRunTriggeredByType.REST_API, None)
    assert "ds" not in ctx and run_day(ctx) == "2026-11-28"


def test_a_run_by_hand_reads_the_night_the_schedule_ran_last():
    """At 01:00 the 02:00 schedule's last complete night began two days before, not yesterday."""
    from airflow.timetables.interval import CronDataIntervalTimetable

    schedule = SimpleNamespace(timetable=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"))
    early = datetime(2026, 11, 29, 1, 0, tzinfo=UTC)
    ctx = {**context(DagRunType.MANUAL, DagRunTriggeredByType.UI, None, run_after=early), "dag": schedule}
    assert run_day(ctx) == "2026-11-27"
    later = {**context(DagRunType.MANUAL, DagRunTriggeredByType.UI, None), "dag": schedule}
    assert run_day(later) == "2026-11-28"
