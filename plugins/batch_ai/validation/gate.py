"""The quality gate: a great-expectations suite over what is about to be published.

The suite is built from the workload: the sink key must be unique, enum fields must hold
their allowed values, text fields must have lengths within their limits and contain no HTML,
and the share of invalid answers among the run's answered records must stay under
``quality_gate.max_invalid_rate``. If any expectation fails, nothing is published and the
records stay ``completed`` for a later publish.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from batch_ai.validation.safety import unsafe_content

log = logging.getLogger(__name__)

#: The column of the outputs frame that says, per row, what is unsafe to show in it (or nothing):
#: the same check the per-record validation applies, over every published field at any depth.
UNSAFE = "unsafe_content"


@dataclass
class GateVerdict:
    success: bool
    checks: list[dict[str, Any]]

    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["success"]]

    def describe(self) -> str:
        return "; ".join(
            f"{c['expectation']} on {c['column']}: {c['unexpected_count']} of {c['element_count']} unexpected"
            f" ({c['unexpected_percent']:.1f}%), e.g. {c['examples']}"
            for c in self.failures()
        )


def _suite(workload, columns: set[str]):
    import great_expectations as gx

    e = gx.expectations
    v = workload.spec.validation
    key = workload.spec.sink.key
    out = [("outputs", e.ExpectColumnValuesToBeUnique(column=key))]
    out += [
        ("outputs", e.ExpectColumnValuesToBeInSet(column=f, value_set=allowed))
        for f, allowed in v.enums.items()
        if f in columns
    ]
    out += [
        ("outputs", e.ExpectColumnValueLengthsToBeBetween(column=f, min_value=1, max_value=limit))
        for f, limit in v.max_length.items()
        if f in columns
    ]
    if v.no_html:
        out.append(("outputs", e.ExpectColumnValuesToBeNull(column=UNSAFE)))
    out.append(
        (
            "answers",
            e.ExpectColumnValuesToBeInSet(
                column="valid", value_set=[True], mostly=1.0 - workload.spec.quality_gate.max_invalid_rate
            ),
        )
    )
    return out


def with_safety_column(workload, outputs: pd.DataFrame) -> pd.DataFrame:
    """``outputs`` with the :data:`UNSAFE` column: ``field: reason; ...`` for each unsafe row, else None."""
    hosts = workload.spec.validation.allowed_link_hosts
    fields = [c for c in outputs.columns if c != workload.spec.sink.key]

    def reasons(row) -> str | None:
        found = unsafe_content({f: row[f] for f in fields if isinstance(row[f], (str, list, dict))}, hosts)
        return "; ".join(f"{path}: {why}" for path, why in found) or None

    frame = outputs.copy()
    frame[UNSAFE] = pd.Series([reasons(row) for row in outputs.to_dict("records")], index=outputs.index, dtype=object)
    return frame


def run_gate(workload, outputs: pd.DataFrame, answered_valid: list[bool]) -> GateVerdict:
    """Validate the outputs about to be published and the run's valid/invalid answers."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    if workload.spec.validation.no_html:
        outputs = with_safety_column(workload, outputs)
    context = gx.get_context(mode="ephemeral")
    source = context.data_sources.add_pandas("batch_ai")
    frames = {"outputs": outputs, "answers": pd.DataFrame({"valid": answered_valid}, dtype=object)}
    checks: list[dict[str, Any]] = []
    by_frame: dict[str, list] = {}
    for frame, expectation in _suite(workload, set(outputs.columns)):
        by_frame.setdefault(frame, []).append(expectation)
    for frame, expectations in by_frame.items():
        if frames[frame].empty:
            continue  # nothing to publish (or nothing answered): nothing to judge
        batch = (
            source.add_dataframe_asset(frame)
            .add_batch_definition_whole_dataframe("run")
            .get_batch(batch_parameters={"dataframe": frames[frame]})
        )
        suite = gx.ExpectationSuite(name=f"{workload.name}_{frame}")
        for expectation in expectations:
            suite.add_expectation(expectation)
        result = batch.validate(suite)
        for r in result.results:
            stats = r.result or {}
            checks.append(
                {
                    "expectation": r.expectation_config.type,
                    "column": r.expectation_config.kwargs.get("column"),
                    "success": bool(r.success),
                    "element_count": stats.get("element_count", len(frames[frame])),
                    "unexpected_count": stats.get("unexpected_count", 0),
                    "unexpected_percent": float(stats.get("unexpected_percent") or 0.0),
                    "examples": [str(x)[:60] for x in (stats.get("partial_unexpected_list") or [])[:3]],
                }
            )
    verdict = GateVerdict(all(c["success"] for c in checks), checks)
    for c in checks:
        log.info(
            "gate %s %s on %s: %d of %d unexpected",
            "passed" if c["success"] else "FAILED",
            c["expectation"],
            c["column"],
            c["unexpected_count"],
            c["element_count"],
        )
    return verdict
