"""Airflow DAG: the model evaluation over the labelled routing set (spec: include/workloads/model_evaluation.yaml)."""

from batch_ai.dag_factory import build_dag

dag = build_dag("model_evaluation")
