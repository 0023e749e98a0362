"""Airflow deadline alerts for workloads that declare when their results are needed.

The DAG of a workload with a ``deadline`` carries a :class:`DeadlineAlert`: when a run has not
finished ``deadline.hours`` after it was queued, Airflow calls :func:`deadline_missed` in the
triggerer. The fallback itself (real-time calls for what is still in a batch job, and the
job's cancellation) happens in the run's wait task, which knows the jobs; this alert is what
tells people, in the triggerer's log and wherever a deployment routes these warnings.

A deadline shorter than the provider's batch completion window (the capability table's
``window``) can be missed by a batch that is on time by the provider's own terms: unless a miss
is answered in real time, the workload carries an "SLA risk" warning (:func:`sla_risk`) in its
DAG's doc and in every report.
"""

from __future__ import annotations

import logging
from datetime import timedelta

log = logging.getLogger(__name__)


def sla_risk(spec, provider: str | None = None) -> str | None:
    """The "SLA risk: ..." warning for a workload spec whose ``deadline`` is shorter than the
    batch completion window of its provider (or of ``provider``) and whose ``on_miss`` is not
    ``realtime``; ``None`` when there is no such risk."""
    from batch_ai.providers.capabilities import capabilities

    deadline = spec.deadline
    if deadline is None or deadline.on_miss == "realtime":
        return None
    name = provider or spec.provider.name
    window = capabilities().provider(name).window
    if deadline.hours >= window.hours:
        return None
    return (
        f"SLA risk: the deadline of {spec.name} ({deadline.hours:g}h) is shorter than {name}'s batch completion "
        f"window of {window.describe()}, and deadline.on_miss is {deadline.on_miss!r}: a batch the provider "
        f"finishes on time by its own terms can still miss the deadline, and nothing answers it then. Set "
        f"deadline.on_miss: realtime, or allow at least {window.hours:g}h "
        f"(window: {window.source}, as of {window.as_of})."
    )


async def deadline_missed(workload: str, hours: float, on_miss: str, **kwargs) -> None:
    context = kwargs.get("context") or {}
    run = context.get("dag_run") if isinstance(context, dict) else None
    what = (
        "its unfinished records go through real-time calls and the batch job is cancelled"
        if on_miss == "realtime"
        else "nothing is done automatically (deadline.on_miss: alert)"
    )
    log.warning(
        "batch-ai: %s run %s missed its deadline of %sh: %s", workload, getattr(run, "run_id", None) or "?", hours, what
    )


#: ``off`` leaves the alerts out of the DAGs. The project's local runner (``airflow dags test``
#: for the demo and the tests) sets it: in Airflow 3.3.2 ``dags test`` fails after a successful
#: run of a DAG with a deadline alert (it looks the alert up by the DAG file's object instead of
#: its database id). The deadline fallback in the wait task does not depend on the alert.
SWITCH = "BATCH_AI_DEADLINE_ALERTS"


def deadline_alert(spec):
    """The DAG's deadline alert for a workload spec (``None`` without a deadline, or when off)."""
    import os

    if spec.deadline is None or os.environ.get(SWITCH, "on").lower() in ("off", "false", "0"):
        return None
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=spec.deadline.hours),
        callback=AsyncCallback(
            deadline_missed,
            kwargs={"workload": spec.name, "hours": spec.deadline.hours, "on_miss": spec.deadline.on_miss},
        ),
        name=f"{spec.name} results due",
    )
