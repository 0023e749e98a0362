"""How long each DAG file takes to parse once Airflow's SDK is loaded, as a DAG processor does:
a fresh process imports the SDK, then imports each file of ``dags/`` in turn and prints the times.

    python benchmarks/parse.py      # one JSON line: {file: seconds}
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "include")]

#: the goal of issue 12
MAX_PARSE_S = 0.2


def main() -> None:
    # what Airflow's DAG processor has loaded before it parses a file: the SDK, and its own module,
    # which imports DAG serialisation (the first DAG with a mapped task group would otherwise pay
    # for that import here: DAG equality imports airflow.serialization.encoders)
    import airflow.sdk  # noqa: F401
    from airflow.dag_processing import processor  # noqa: F401
    from airflow.sdk.bases.operator import BaseOperator  # noqa: F401

    before = set(sys.modules)
    times = {}
    for path in sorted((REPO / "dags").glob("*.py")):
        started = time.perf_counter()
        spec = importlib.util.spec_from_file_location(f"dag_{path.stem}", path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        times[path.name] = round(time.perf_counter() - started, 3)
    hooks = sorted(
        name for name in set(sys.modules) - before if name.startswith("airflow.providers") and ".hooks." in name
    )
    print(json.dumps({"seconds": times, "provider_hooks_imported": hooks}))


if __name__ == "__main__":
    main()
