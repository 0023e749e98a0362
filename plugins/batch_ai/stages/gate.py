"""The ``quality_gate`` task: the great-expectations suite over exactly what is about to be published."""

from __future__ import annotations

from batch_ai.ledger.states import State
from batch_ai.ledger.store import Ledger
from batch_ai.stages.run import RunInfo
from batch_ai.workloads import Workload


def gate(workload: Workload, ledger: Ledger, run: RunInfo):
    """Run the great-expectations gate over the records about to be published."""
    import pandas as pd

    from batch_ai.validation.gate import run_gate

    sink = workload.spec.sink
    ready = ledger.records_in_state(workload.record_key(), State.COMPLETED)
    outputs = pd.DataFrame(
        [{sink.key: r.source_id, **{c: (r.output or {}).get(c) for c in sink.columns}} for r in ready],
        columns=[sink.key, *sink.columns],
    )
    states = ledger.run_accounting(workload.name, run.run_id)["states"]
    valid = states[State.COMPLETED] + states[State.PUBLISHED]
    answered = [True] * valid + [False] * states[State.INVALID_OUTPUT]
    verdict = run_gate(workload, outputs, answered)
    # what a person approving the publish sees: the counts and a few of the outputs
    shown = [{sink.key: r.source_id, **{c: (r.output or {}).get(c) for c in sink.columns[:3]}} for r in ready[:3]]
    ledger.set_run_detail(
        workload.name,
        run.run_id,
        "gate",
        {
            "success": verdict.success,
            "failed": verdict.failures(),
            "records_ready": len(ready),
            "sample": shown,
            # publish takes exactly these, not what arrived after the gate
            "record_ids": [r.id for r in ready],
        },
    )
    return verdict
