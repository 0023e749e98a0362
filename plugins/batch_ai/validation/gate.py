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
from collections.abc import Iterable
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
    if v.no_html and not workload.embeds:
        out.append(("outputs", e.ExpectColumnValuesToBeNull(column=UNSAFE)))
    if workload.embeds and "dimensions" in columns:  # every vector of the configured length
        out.append(
            (
                "outputs",
                e.ExpectColumnValuesToBeInSet(column="dimensions", value_set=[workload.spec.provider.dimensions]),
            )
        )
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


def run_gate(workload, outputs: Iterable[pd.DataFrame] | pd.DataFrame, valid: int, invalid: int) -> GateVerdict:
    """Validate the outputs about to be published (one frame, or frames a page at a time) and the
    run's share of invalid answers (``valid`` and ``invalid`` counts)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # no tqdm bars: written to stderr, Airflow's task log shows each as an error line
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("batch_ai")
    assets = {}
    merged: dict[tuple[str, str | None], dict[str, Any]] = {}

    def check(frame_name: str, frame: pd.DataFrame) -> None:
        if frame.empty:
            return  # nothing to publish (or nothing answered): nothing to judge
        if frame_name not in assets:
            assets[frame_name] = source.add_dataframe_asset(frame_name).add_batch_definition_whole_dataframe("run")
        suite = gx.ExpectationSuite(name=f"{workload.name}_{frame_name}")
        for name, expectation in _suite(workload, set(frame.columns)):
            if name == frame_name:
                suite.add_expectation(expectation)
        batch = assets[frame_name].get_batch(batch_parameters={"dataframe": frame})
        for r in batch.validate(suite).results:
            _merge(merged, r, len(frame))

    for frame in [outputs] if isinstance(outputs, pd.DataFrame) else outputs:
        # vectors are numbers: no text to check for markup
        safety = workload.spec.validation.no_html and not workload.embeds
        check("outputs", with_safety_column(workload, frame) if safety else frame)
    # the run's answers as a column of booleans: the share of invalid ones is what is judged
    check("answers", pd.DataFrame({"valid": [True] * valid + [False] * invalid}, dtype=object))
    checks = list(merged.values())
    for c in checks:
        c["unexpected_percent"] = 100.0 * c["unexpected_count"] / c["element_count"] if c["element_count"] else 0.0
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


def _merge(merged: dict, result, rows: int) -> None:
    """Add one page's result of an expectation to its totals over every page. An expectation
    holds over the whole when it holds on every page: the key's uniqueness too, as a key has one
    record per version (the ledger's unique constraint), so no two pages share one."""
    stats = result.result or {}
    column = result.expectation_config.kwargs.get("column")
    total = merged.setdefault(
        (result.expectation_config.type, column),
        {
            "expectation": result.expectation_config.type,
            "column": column,
            "success": True,
            "element_count": 0,
            "unexpected_count": 0,
            "examples": [],
        },
    )
    total["success"] = total["success"] and bool(result.success)
    total["element_count"] += stats.get("element_count", rows)
    total["unexpected_count"] += stats.get("unexpected_count", 0)
    examples = [str(x)[:60] for x in (stats.get("partial_unexpected_list") or [])]
    total["examples"] = (total["examples"] + examples)[:3]
