"""Airflow DAG: nightly knowledge-base embeddings (spec: include/workloads/kb_embeddings.yaml)."""

from batch_ai.dag_factory import build_dag

dag = build_dag("kb_embeddings")
