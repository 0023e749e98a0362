"""batch-ai: nightly LLM batch pipelines on Apache Airflow.

The package holds all the logic; DAG files in ``dags/`` only call the factory.
"""

import os
from pathlib import Path

__version__ = "0.1.0"


def include_dir() -> Path:
    """Where workloads, prompts, schemas and the capability table live."""
    env = os.environ.get("BATCH_AI_INCLUDE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "include"
