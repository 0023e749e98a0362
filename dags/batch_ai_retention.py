"""Airflow DAG: the retention policy of every workload, daily (see ``batch_ai.retention`` and each
workload's ``retention:``). Trigger it with ``dry_run`` to see what it would delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param, get_current_context, task

from batch_ai.workloads.workload import workload_names

with DAG(
    dag_id="batch_ai_retention",
    description="Delete what each workload's retention policy no longer keeps, and report the bytes freed",
    doc_md=__doc__,
    schedule="0 5 * * *",  # after the nightly runs
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["batch-ai", "retention"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True},
    params={
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Report what would be deleted, and delete nothing.",
        )
    },
) as dag:

    @task
    def prune(workload: str) -> dict:
        from batch_ai.ledger.store import Ledger
        from batch_ai.providers import adapter_for
        from batch_ai.retention import apply
        from batch_ai.workloads import load_workload

        w = load_workload(workload)
        ledger = Ledger.connect()
        try:
            return apply(w, ledger, adapter_for(w), dry_run=bool(get_current_context()["params"]["dry_run"]))
        finally:
            ledger.dispose()

    @task
    def report(reports: list[dict]) -> dict:
        from batch_ai.retention import summary, write_report

        reports = list(reports)
        print(summary(reports))
        path = write_report(reports, get_current_context()["run_id"])
        freed = sum(r["bytes_freed"] for r in reports)
        return {"bytes_freed": freed, "workloads": len(reports), "report": str(path) if path else None}

    report(prune.expand(workload=workload_names()))
