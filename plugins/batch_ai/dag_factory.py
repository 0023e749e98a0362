"""Build a workload's DAG from its YAML spec.

The DAG has the same shape for every workload and provider::

    extract >> sample >> plan >> job[i](submit >> wait >> collect) >> publish >> report

with one mapped ``job`` group per provider job. Building it reads only the workload's own
files under ``include/``: no database, connection or network access at parse time.
"""

from __future__ import annotations

from airflow.sdk import DAG, task_group
from airflow.timetables.interval import CronDataIntervalTimetable

from batch_ai.operators import job_operators
from batch_ai.operators.stages import (
    CollectOperator,
    ExtractOperator,
    PlanJobsOperator,
    PublishOperator,
    ReportOperator,
    SampleOperator,
)
from batch_ai.workloads import load_workload


def build_dag(name: str) -> DAG:
    w = load_workload(name)
    s = w.spec
    submit_cls, wait_cls = job_operators(s.provider.name)
    schedule = CronDataIntervalTimetable(s.schedule, timezone="UTC") if s.schedule else None
    with DAG(
        dag_id=s.name,
        description=s.description.strip()[:200] or None,
        doc_md=f"**{s.name}**: {s.description}\n\nSpec: `include/workloads/{w.path.name}`; "
        f"provider `{s.provider.name}` / `{s.provider.model}`; prompt `{s.prompt.version}`, "
        f"schema `{s.output_schema.version}`.",
        schedule=schedule,
        start_date=s.start_date,
        catchup=False,
        max_active_runs=1,
        tags=["batch-ai", s.provider.name, *s.tags],
    ) as dag:
        extract = ExtractOperator(task_id="extract", workload=name)
        sample = SampleOperator(task_id="sample", workload=name)
        plan = PlanJobsOperator(task_id="plan", workload=name)

        @task_group(group_id="job")
        def job(token):
            submit = submit_cls(task_id="submit", workload=name, token=token)
            wait = wait_cls(task_id="wait", workload=name, token=token)
            collect = CollectOperator(task_id="collect", workload=name, token=token)
            submit >> wait >> collect

        jobs = job.expand(token=plan.output)
        # none_failed: a run with nothing to submit (all jobs skipped) still publishes and reports
        publish = PublishOperator(task_id="publish", workload=name, trigger_rule="none_failed")
        report = ReportOperator(task_id="report", workload=name, trigger_rule="none_failed")
        extract >> sample >> plan >> jobs >> publish >> report
    return dag
