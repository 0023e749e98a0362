"""Airflow DAG: nightly CRM lead scores (spec: include/workloads/lead_scoring.yaml)."""

from batch_ai.dag_factory import build_dag

dag = build_dag("lead_scoring")
