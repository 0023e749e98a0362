"""Build a workload's DAG from its YAML spec.

The DAG has the same shape for every workload and provider::

    extract >> sample >> plan >> job[i](submit >> wait >> collect)
            >> retry_1(requeue >> plan >> job[i](...)) >> ... >> review >> quality_gate >> publish >> report

with one mapped ``job`` group per provider job, and one ``retry_<n>`` group per retry round
(each skips itself when nothing failed transiently). Building it reads only the workload's own
files under ``include/``: no database, connection or network access at parse time.
"""

from __future__ import annotations

from airflow.sdk import DAG, Asset, TaskGroup, task_group
from airflow.timetables.interval import CronDataIntervalTimetable

from batch_ai.operators import job_operators
from batch_ai.operators.stages import (
    CollectOperator,
    ExtractOperator,
    PlanJobsOperator,
    PublishOperator,
    QualityGateOperator,
    ReportOperator,
    RetryRoundOperator,
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

        def jobs(tokens):
            @task_group(group_id="job")
            def job(token):
                submit = submit_cls(task_id="submit", workload=name, token=token)
                wait = wait_cls(task_id="wait", workload=name, token=token)
                collect = CollectOperator(task_id="collect", workload=name, token=token)
                submit >> wait >> collect

            return job.expand(token=tokens)

        extract >> sample >> plan
        last = jobs(plan.output)
        # none_failed throughout: a round with nothing to do is skipped, and what follows still runs
        for round_no in range(1, s.retry.rounds + 1):
            with TaskGroup(group_id=f"retry_{round_no}"):
                requeue = RetryRoundOperator(task_id="requeue", workload=name, round_no=round_no, trigger_rule="none_failed")
                round_plan = PlanJobsOperator(task_id="plan", workload=name)
                last >> requeue >> round_plan
                last = jobs(round_plan.output)
        review = RetryRoundOperator(task_id="review", workload=name, round_no=s.retry.rounds + 1, final=True,
                                    trigger_rule="none_failed")
        gate = QualityGateOperator(task_id="quality_gate", workload=name, trigger_rule="none_failed")
        # downstream DAGs (a dashboard refresh) can be scheduled on this asset
        published = Asset(name=f"{s.name}.{s.sink.table}", uri=f"batch-ai://{s.name}/{s.sink.table}")
        publish = PublishOperator(task_id="publish", workload=name, trigger_rule="none_failed", outlets=[published])
        report = ReportOperator(task_id="report", workload=name, trigger_rule="none_failed")
        last >> review >> gate >> publish >> report
    return dag
