"""Airflow DAG: nightly compliance review of messages and clauses (spec: include/workloads/compliance_review.yaml)."""

from batch_ai.dag_factory import build_dag

dag = build_dag("compliance_review")
