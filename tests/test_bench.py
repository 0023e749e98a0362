"""The benchmark keeps working: ``make bench``'s smallest run (2,000 records through every stage
on SQLite, once more profiled for the "why" of the goals it misses, the DAG parse times, and a
300-record night through ``airflow dags test``). Its figures are not checked here; the goals live
in ``make bench``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]


def test_the_benchmark_runs_every_stage_and_a_night(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--smoke", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "sqlite" in line]
    assert [row.split("|")[1].strip() for row in rows] == ["extract", "plan", "submit", "collect", "gate", "publish"]
    assert all("2,000" in row for row in rows)
    assert "DAG file parse after Airflow's SDK is loaded" in proc.stdout
    # at 2,000 records the ledger-keeping stages miss their ratio goals: each is explained
    for stage in ("extract", "collect"):
        why = next((line for line in proc.stdout.splitlines() if line.startswith(f"**{stage}, sqlite**")), "")
        assert "database-only" in why and " s profiled, database " in why, proc.stdout[-3000:]
    assert "Top entries by own time: `" in proc.stdout
    assert "A 300-record night, sqlite ledger" in proc.stdout
    for task in ("extract", "plan", "wait", "collect", "quality_gate", "publish", "report"):
        assert f"{task} | " in proc.stdout, f"no time for the task {task}"
    assert not list(tmp_path.iterdir()), "a smoke run writes no results"
