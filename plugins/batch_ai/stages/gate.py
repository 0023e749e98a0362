"""The ``quality_gate`` task: the great-expectations suite over exactly what is about to be published.

The outputs are read and checked a page at a time (:data:`PAGE` records), so the gate's memory
does not grow with the night; each page is marked as checked by this run, and the publish takes
exactly the marked records (one that changes after the gate loses its mark).
"""

from __future__ import annotations

from collections.abc import Iterator

from batch_ai.ledger.states import State
from batch_ai.ledger.store import Ledger
from batch_ai.stages.run import RunInfo
from batch_ai.workloads import Workload

#: Records per page the gate checks at once (one great-expectations validation each).
PAGE = 20_000


def gate(workload: Workload, ledger: Ledger, run: RunInfo):
    """Run the great-expectations gate over the records about to be published."""
    from batch_ai.validation.gate import run_gate

    sink = workload.spec.sink
    seen = {"records": 0, "sample": []}

    def frames() -> Iterator:
        import pandas as pd

        for page in ledger.ready_pages(workload.record_key(), PAGE):
            rows = [{sink.key: r.source_id, **{c: (r.output or {}).get(c) for c in sink.columns}} for r in page]
            if not seen["sample"]:  # what a person approving the publish sees: a few of the outputs
                seen["sample"] = [{k: _short(row[k]) for k in [sink.key, *sink.columns[:3]]} for row in rows[:3]]
            seen["records"] += len(rows)
            yield pd.DataFrame(rows, columns=[sink.key, *sink.columns])
            # marked once checked: a gate killed half-way has marked only pages it checked
            ledger.mark_gated([r.id for r in page], run.run_id)

    states = ledger.run_accounting(workload.name, run.run_id)["states"]
    valid = states[State.COMPLETED] + states[State.PUBLISHED]
    verdict = run_gate(workload, frames(), valid, states[State.INVALID_OUTPUT])
    ledger.set_run_detail(
        workload.name,
        run.run_id,
        "gate",
        {
            "success": verdict.success,
            "failed": verdict.failures(),
            "records_ready": seen["records"],
            "sample": seen["sample"],
        },
    )
    return verdict


def _short(value):
    """A sample value as a person approving the publish reads it (an encoded vector is 8 KB)."""
    return value[:80] + "..." if isinstance(value, str) and len(value) > 1000 else value
