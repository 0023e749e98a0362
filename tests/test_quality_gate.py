"""The great-expectations gate built from the ticket_summaries workload."""

from __future__ import annotations

import pandas as pd

from batch_ai.validation.gate import run_gate
from batch_ai.workloads import load_workload

W = load_workload("ticket_summaries")
GOOD = {
    "ticket_id": "T-1",
    "summary": "Refund the second charge.",
    "category": "billing",
    "sentiment": "negative",
    "language": "en",
    "action_items": [],
}


def frame(*rows):
    return pd.DataFrame(list(rows), columns=["ticket_id", *W.spec.sink.columns])


def test_clean_outputs_pass_and_draw_no_progress_bars(capfd):
    verdict = run_gate(W, frame(GOOD, {**GOOD, "ticket_id": "T-2"}), 9, 1)
    assert verdict.success and verdict.checks and not verdict.failures()
    # tqdm writes its bars to stderr, which Airflow's task log shows as error lines
    assert "Calculating Metrics" not in capfd.readouterr().err


def test_each_failed_expectation_is_named_with_numbers():
    outputs = frame(GOOD, dict(GOOD), {**GOOD, "ticket_id": "T-3", "category": "legal", "summary": "<b>x</b>"})
    verdict = run_gate(W, outputs, 7, 3)
    failed = {(c["expectation"], c["column"]): c for c in verdict.failures()}
    assert failed[("expect_column_values_to_be_unique", "ticket_id")]["unexpected_count"] == 2
    assert failed[("expect_column_values_to_be_in_set", "category")]["examples"] == ["legal"]
    assert failed[("expect_column_values_to_be_null", "unsafe_content")]["unexpected_count"] == 1
    rate = failed[("expect_column_values_to_be_in_set", "valid")]  # 30% invalid, over the 20% allowed
    assert rate["unexpected_count"] == 3 and rate["element_count"] == 10
    assert "expect_column_values_to_be_unique on ticket_id: 2 of 3 unexpected" in verdict.describe()


def test_invalid_rate_at_the_threshold_passes():
    assert run_gate(W, frame(GOOD), 8, 2).success
