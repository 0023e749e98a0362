"""Every DAG file imports cleanly and quickly, without touching the ledger or the network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.stem for p in DAG_FILES])
def test_dag_file_imports_without_io(path, tmp_path, record_property):
    # A fresh interpreter, so the import time is the parse time the DAG processor sees. The
    # ledger URL and the provider base URL point at nothing: any parse-time I/O would fail.
    code = f"""
import sys, time, socket
sys.path[:0] = [{str(REPO / "plugins")!r}, {str(REPO / "include")!r}]
def no_network(*a, **k):
    raise AssertionError("network access at DAG parse time")
socket.socket.connect = no_network
import airflow.sdk  # Airflow itself is loaded before the DAG processor parses files
start = time.perf_counter()
import importlib.util
spec = importlib.util.spec_from_file_location("dag_under_test", {str(path)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
elapsed = time.perf_counter() - start
from airflow.sdk import DAG
dags = [v for v in vars(module).values() if isinstance(v, DAG)]
assert dags, "no DAG object in the file"
for dag in dags:
    dag.validate()
print(f"{{elapsed:.3f}}", ",".join(d.dag_id for d in dags), len(dags[0].tasks))
"""
    env = {
        "PATH": "/usr/bin:/bin",
        "BATCH_AI_LEDGER_URL": f"sqlite:///{tmp_path}/must-not-exist/ledger.sqlite",
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seconds, dag_ids, n_tasks = proc.stdout.split()[-3:]
    # printed at the end of the run (conftest.py), which also works with parallel workers
    record_property("parse_time", f"dags/{path.name}: {float(seconds) * 1000:.0f} ms ({dag_ids}, {n_tasks} tasks)")
    assert dag_ids == path.stem
    assert not (tmp_path / "must-not-exist").exists()


def test_dag_shape():
    from batch_ai.dag_factory import build_dag

    dag = build_dag("ticket_summaries")
    rounds = [f"retry_{n}.{t}" for n in (1, 2) for t in ("requeue", "plan", "job.submit", "job.wait", "job.collect")]
    assert set(dag.task_ids) == {
        "extract",
        "sample",
        "plan",
        "job.submit",
        "job.wait",
        "job.collect",
        *rounds,
        "review",
        "quality_gate",
        "publish",
        "report",
    }
    assert dag.get_task("job.wait").deferrable
    assert dag.get_task("job.submit").__class__.__name__ == "OpenAIBatchSubmitOperator"
    assert dag.get_task("publish").trigger_rule == "none_failed"
    assert dag.timetable.summary == "0 2 * * *"


def test_every_task_of_ours_retries_with_back_off():
    """A transient scheduler hiccup (a deferred task failed by a stale success) must not lose a
    night: every task is idempotent and retried; only the person's approval is not ours."""
    from batch_ai.dag_factory import build_dag

    for dag_id in ("ticket_summaries", "compliance_review", "model_evaluation"):
        for task in build_dag(dag_id).tasks:
            if task.task_id == "approve_publish":
                continue
            assert task.retries >= 2 and task.retry_exponential_backoff, f"{dag_id}.{task.task_id}"


def test_trigger_form_params_describe_backfills():
    from batch_ai.dag_factory import build_dag
    from batch_ai.ledger.states import RERUN_STATES

    params = build_dag("ticket_summaries").params
    assert set(params) == {
        "date_from",
        "date_to",
        "rerun_states",
        "prompt_version",
        "schema_version",
        "record_limit",
        "dry_run",
    }
    for name in params:
        assert params.get_param(name).description, f"param {name} has no description for the trigger form"
    assert params["dry_run"] is False and params["rerun_states"] == []
    # a default (nightly) run validates against the form's schema
    params.validate()
    # the form (Airflow's UI) marks a field required unless its type allows null, and shows an
    # array as a multi-select when the schema lists its values in `examples` or `enum`
    for name in params:
        assert "null" in params.get_param(name).schema["type"], f"{name} has a default but shows as required"
    rerun = params.get_param("rerun_states").schema
    assert rerun["examples"] == rerun["items"]["enum"] == RERUN_STATES


def test_human_approval_of_the_publish_sits_between_the_gate_and_the_publish(tmp_path, monkeypatch):
    import shutil

    import jinja2
    import yaml

    from batch_ai import include_dir
    from batch_ai.dag_factory import build_dag
    from batch_ai.workloads import load_workload

    copy = tmp_path / "include"
    shutil.copytree(
        include_dir(), copy, ignore=shutil.ignore_patterns("provider_emulator", "sample_data", "__pycache__")
    )
    spec_path = copy / "workloads" / "ticket_summaries.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["quality_gate"]["human_approval"] = True
    spec_path.write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("BATCH_AI_INCLUDE_DIR", str(copy))
    load_workload.cache_clear()
    try:
        dag = build_dag("ticket_summaries")
    finally:
        load_workload.cache_clear()
    approve = dag.get_task("approve_publish")
    assert type(approve).__name__ == "ApprovalOperator"
    assert approve.upstream_task_ids == {"quality_gate"} and approve.downstream_task_ids == {"publish"}
    assert approve.response_timeout.total_seconds() == 12 * 3600

    gate = {"records_ready": 97, "states": {"completed": 97, "review_required": 3}, "sample": [{"ticket_id": "T-1"}]}

    class TI:
        def xcom_pull(self, task_ids):
            assert task_ids == "quality_gate"
            return gate

    body = approve.render_template(approve.body, {"ti": TI(), "dag": dag}, jinja_env=jinja2.Environment())
    assert "**97** record(s)" in body and '"review_required": 3' in body and '- `{"ticket_id": "T-1"}`' in body


def test_every_workload_with_a_deadline_gets_airflow_deadline_alert(monkeypatch):
    from batch_ai.dag_factory import build_dag
    from batch_ai.deadlines import SWITCH

    monkeypatch.setenv(SWITCH, "on")
    dag = build_dag("lead_scoring")
    (alert,) = dag.deadline
    assert alert.interval.total_seconds() == 4 * 3600 and alert.callback.kwargs["on_miss"] == "realtime"
    monkeypatch.setenv(SWITCH, "off")
    assert not build_dag("lead_scoring").deadline
    assert not build_dag("model_evaluation").deadline  # no deadline declared


def test_the_evaluation_dag_runs_each_target_then_scores_them():
    from batch_ai.dag_factory import build_dag

    dag = build_dag("model_evaluation")
    evaluate = dag.get_task("evaluate")
    assert evaluate.upstream_task_ids == {
        "openai__gpt_4o_mini.report",
        "openai__gpt_4_1_nano.report",
        "anthropic__claude_haiku_4_5.report",
        "vertex__gemini_2_0_flash_001.report",
    }
    assert type(dag.get_task("vertex__gemini_2_0_flash_001.job.submit")).__name__ == "VertexGeminiBatchSubmitOperator"
    assert dag.get_task("anthropic__claude_haiku_4_5.extract").target == "anthropic:claude-haiku-4-5"


def test_provider_calls_retry_what_a_retry_can_fix_and_fail_fast_otherwise():
    """An exception raised in a task goes the way it goes in Airflow: through the operator's one
    translation (the adapter classifies the SDK's exceptions), then the task's retry policy."""
    import httpx
    import openai
    from airflow.sdk.exceptions import AirflowFailException

    from batch_ai.dag_factory import build_dag
    from batch_ai.errors import StageError
    from batch_ai.ledger.states import IllegalTransition

    task = build_dag("ticket_summaries").get_task("job.submit")
    assert task.adapter.name == "openai"  # the task made a provider call: its adapter classifies what it raised
    request = httpx.Request("POST", "http://127.0.0.1/v1/batches")

    def decision(exc):
        try:
            with task.airflow_errors():
                raise exc
        except AirflowFailException:
            return None
        except Exception as raised:
            return task.retry_policy.evaluate(raised, try_number=1, max_tries=3)

    def action(exc):
        made = decision(exc)
        return "fail" if made is None else made.action.value

    assert action(openai.APIConnectionError(request=request)) == "retry"
    assert (
        action(openai.RateLimitError("slow down", response=httpx.Response(429, request=request), body=None)) == "retry"
    )
    assert (
        decision(
            openai.RateLimitError("x", response=httpx.Response(429, request=request), body=None)
        ).retry_delay.total_seconds()
        == 120
    )
    assert (
        action(openai.AuthenticationError("bad key", response=httpx.Response(401, request=request), body=None))
        == "fail"
    )
    assert action(StageError("record 1 alone is too big")) == "fail"
    assert action(IllegalTransition("record 1: queued -> published")) == "fail"
    assert action(KeyError("something else")) == "default"


def test_a_deadline_inside_the_provider_window_is_an_sla_risk_in_the_dag_doc(monkeypatch):
    from batch_ai.dag_factory import dag_doc
    from batch_ai.providers.capabilities import capabilities
    from batch_ai.workloads.workload import PROVIDER_OVERRIDE, load_workload_file, workloads_dir

    def doc(name: str, provider: str | None = None) -> str:
        monkeypatch.delenv(PROVIDER_OVERRIDE, raising=False)
        if provider:
            monkeypatch.setenv(PROVIDER_OVERRIDE, provider)
        return dag_doc(load_workload_file(workloads_dir() / f"{name}.yaml"))

    # 6 h, on_miss alert, against OpenAI's 24 h completion window
    assert capabilities().provider("openai").window.hours == 24
    assert "**Warning.** SLA risk: the deadline of ticket_summaries (6h) is shorter than openai's batch " in doc(
        "ticket_summaries"
    )
    vertex = doc("ticket_summaries", "vertex")
    assert "vertex's batch completion window of 72h (queueing up to 72h; not covered by the SLA)" in vertex
    assert "Set deadline.on_miss: realtime, or allow at least 72h" in vertex
    # a missed deadline answered in real time is no risk; nor is a workload without a deadline
    assert "SLA risk" not in doc("lead_scoring") and "SLA risk" not in doc("model_evaluation")
