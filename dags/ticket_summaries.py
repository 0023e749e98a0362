"""Airflow DAG: nightly support-ticket summaries (spec: include/workloads/ticket_summaries.yaml)."""

from batch_ai.dag_factory import build_dag

dag = build_dag("ticket_summaries")
