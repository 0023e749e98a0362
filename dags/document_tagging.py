"""Airflow DAG: nightly document tags (spec: include/workloads/document_tagging.yaml)."""

from batch_ai.dag_factory import build_dag

dag = build_dag("document_tagging")
