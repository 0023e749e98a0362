"""Build a workload's DAG from its YAML spec.

The DAG has the same shape for every workload and provider::

    extract >> sample >> plan >> job[i](submit >> wait >> collect)
            >> retry_1(requeue >> plan >> job[i](...)) >> ... >> review >> quality_gate >> publish >> report

with one mapped ``job`` group per provider job, and one ``retry_<n>`` group per retry round
(each skips itself when nothing failed transiently). Building it reads only the workload's own
files under ``include/``: no database, connection or network access at parse time.
"""

from __future__ import annotations

from airflow.sdk import DAG, Asset, Param, TaskGroup, task_group
from airflow.timetables.interval import CronDataIntervalTimetable

from batch_ai.deadlines import deadline_alert, sla_risk
from batch_ai.ledger.states import RERUN_STATES
from batch_ai.operators import job_operators
from batch_ai.operators.stages import (
    CollectOperator,
    EvaluateOperator,
    ExtractOperator,
    PlanJobsOperator,
    PublishOperator,
    QualityGateOperator,
    ReportOperator,
    RetryRoundOperator,
    SampleOperator,
)
from batch_ai.workloads import load_workload


def run_params(prompt_version: str, schema_version: str) -> dict[str, Param]:
    """The trigger form: what a backfill or a manual run can ask for. All empty: a nightly run."""
    return {
        "date_from": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Backfill: first day",
            description="Read the source files of every day from this one to `date_to` (both "
            "included). Leave both empty to read what a nightly run would: a scheduled run its own "
            "day, a run triggered here the last complete day before its logical date (yesterday, "
            "if the logical date is left at now).",
        ),
        "date_to": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Backfill: last day",
            description="Last day of the backfill's range (default: `date_from`).",
        ),
        "rerun_states": Param(
            [],
            type=["array", "null"],  # null: not required in the form; examples: a multi-select
            items={"type": "string", "enum": RERUN_STATES},
            examples=RERUN_STATES,
            title="Rerun records in these states",
            description="Send the records of those days that are in these states round again. "
            "invalid_output is rerun only with a new prompt or schema version; "
            "without any, records that are done are left alone.",
        ),
        "prompt_version": Param(
            None,
            type=["null", "string"],
            title="Prompt version override",
            description=f"Run with this prompt version (its file lies beside the configured "
            f"one, e.g. v2.yaml) instead of {prompt_version}.",
        ),
        "schema_version": Param(
            None,
            type=["null", "string"],
            title="Schema version override",
            description=f"Run with this output schema version instead of {schema_version}.",
        ),
        "record_limit": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Record limit",
            description="Submit at most this many records in this run; the rest stay queued.",
        ),
        "dry_run": Param(
            False,
            type=["boolean", "null"],
            title="Dry run",
            description="Report what would be submitted and what it would cost, and change nothing.",
        ),
    }


APPROVAL_BODY = """\
The quality gate passed. **{{ ti.xcom_pull(task_ids='quality_gate')['records_ready'] }}** record(s)
of `{{ dag.dag_id }}` are ready to publish.

Records of this run by state: `{{ ti.xcom_pull(task_ids='quality_gate')['states'] | tojson }}`

A few of them:
{% for row in ti.xcom_pull(task_ids='quality_gate')['sample'] %}
- `{{ row | tojson }}`
{% endfor %}

Approve to publish them now. Reject and they stay ready for a later run's publish."""


def approval_task(spec):
    """Airflow's human-in-the-loop approval of the whole publish (``quality_gate.human_approval``)."""
    from datetime import timedelta

    from airflow.providers.standard.operators.hitl import ApprovalOperator

    return ApprovalOperator(
        task_id="approve_publish",
        subject=f"Publish {spec.name}?",
        body=APPROVAL_BODY,
        # no answer in time: the task fails and nothing is published
        response_timeout=timedelta(hours=spec.quality_gate.approval_timeout_hours),
    )


def run_chain(name: str, spec, target: str | None = None):
    """One run's tasks for one provider: extract ... report. Returns the report task."""
    submit_cls, wait_cls = job_operators(spec.provider.name)
    kw = {"workload": name, "target": target}
    extract = ExtractOperator(task_id="extract", **kw)
    sample = SampleOperator(task_id="sample", **kw)
    plan = PlanJobsOperator(task_id="plan", **kw)

    def jobs(tokens):
        @task_group(group_id="job")
        def job(token):
            submit = submit_cls(task_id="submit", token=token, **kw)
            wait = wait_cls(task_id="wait", token=token, **kw)
            collect = CollectOperator(task_id="collect", token=token, **kw)
            submit >> wait >> collect

        return job.expand(token=tokens)

    extract >> sample >> plan
    last = jobs(plan.output)
    # none_failed throughout: a round with nothing to do is skipped, and what follows still runs
    for round_no in range(1, spec.retry.rounds + 1):
        with TaskGroup(group_id=f"retry_{round_no}"):
            requeue = RetryRoundOperator(task_id="requeue", round_no=round_no, trigger_rule="none_failed", **kw)
            round_plan = PlanJobsOperator(task_id="plan", round_no=round_no, **kw)
            last >> requeue >> round_plan
            last = jobs(round_plan.output)
    review = RetryRoundOperator(
        task_id="review", round_no=spec.retry.rounds + 1, final=True, trigger_rule="none_failed", **kw
    )
    gate = QualityGateOperator(task_id="quality_gate", trigger_rule="none_failed", **kw)
    # downstream DAGs (a dashboard refresh) can be scheduled on this asset
    published = Asset(name=f"{spec.name}.{spec.sink.name}", uri=f"x-batch-ai://{spec.name}/{spec.sink.name}")
    publish = PublishOperator(task_id="publish", trigger_rule="none_failed", outlets=[published], **kw)
    report = ReportOperator(task_id="report", trigger_rule="none_failed", **kw)
    last >> review >> gate
    if spec.quality_gate.human_approval:
        gate >> approval_task(spec) >> publish
    else:
        gate >> publish
    publish >> report
    return report


def dag_doc(workload) -> str:
    """The DAG's doc: the workload, its spec file, provider and versions, and any SLA risk."""
    spec = workload.spec
    providers = [t.provider for t in spec.evaluation.targets] if spec.evaluation else [spec.provider.name]
    risks = [r for p in dict.fromkeys(providers) if (r := sla_risk(spec, p))]
    return (
        f"**{spec.name}**: {spec.description}\n\nSpec: `include/workloads/{workload.path.name}`; "
        f"provider `{spec.provider.name}` / `{spec.provider.model}`; prompt `{spec.prompt.version}`, "
        f"schema `{spec.output_schema.version}`." + "".join(f"\n\n**Warning.** {r}" for r in risks)
    )


def build_dag(name: str) -> DAG:
    workload = load_workload(name)
    spec = workload.spec
    schedule = CronDataIntervalTimetable(spec.schedule, timezone="UTC") if spec.schedule else None
    with DAG(
        dag_id=spec.name,
        description=spec.description.strip()[:200] or None,
        doc_md=dag_doc(workload),
        schedule=schedule,
        start_date=spec.start_date,
        catchup=False,
        max_active_runs=1,
        tags=["batch-ai", spec.provider.name, *spec.tags],
        params=run_params(spec.prompt.version, spec.output_schema.version),
        **({"deadline": alert} if (alert := deadline_alert(spec)) else {}),
    ) as dag:
        if spec.evaluation:
            # the same items through each provider/model, then one evaluation against the labels
            ends = []
            for target in spec.evaluation.targets:
                with TaskGroup(group_id=target.slug):
                    ends.append(
                        run_chain(
                            name,
                            spec.model_copy(update={"provider": target.provider_spec(spec.provider)}),
                            target=target.key,
                        )
                    )
            ends >> EvaluateOperator(task_id="evaluate", workload=name, trigger_rule="all_done")
        else:
            run_chain(name, spec)
    return dag
