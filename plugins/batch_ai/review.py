"""The review queue: records waiting for a person, and the decisions people make on them.

A record waits in ``review_required`` because a review rule matched its output, it was
refused, it was picked for the random spot check, or its attempts ran out. A reviewer
approves it (published by the next publish step), rejects it (never published), edits the
output and approves it (the edit is validated like a model's answer), or sends it round
again. Every decision is a state change in the ledger, audited under the reviewer's name.
The review page (``plugins/batch_ai_review.py``) and ``python -m batch_ai review`` both
call :func:`decide`.
"""

from __future__ import annotations

import json
from typing import Any

from batch_ai.errors import IllegalTransition, ReviewError
from batch_ai.ledger.states import State
from batch_ai.ledger.store import Change, Ledger

__all__ = ["ACTIONS", "ReviewError", "decide", "history", "queue", "view"]

ACTIONS = ("approve", "reject", "edit", "requeue")


def history(ledger: Ledger, record_id: int) -> list[dict[str, Any]]:
    """Every state change of a record, oldest first, with the provider job it was in."""
    return [
        {
            "at": r.at.isoformat(timespec="seconds") if r.at else None,
            "from": r.from_state,
            "to": r.to_state,
            "by": r.actor,
            "run_id": r.run_id,
            "job": r.provider_job_id or r.token,
            "attempt": r.attempt,
            "request_id": r.request_id,
            "reason": r.reason,
        }
        for r in ledger.history(record_id)
    ]


def view(ledger: Ledger, rec) -> dict[str, Any]:
    """A record as a reviewer sees it."""
    return {
        "id": rec.id,
        "workload": rec.workload,
        "source_id": rec.source_id,
        "state": rec.state,
        "prompt_version": rec.prompt_version,
        "schema_version": rec.schema_version,
        "model": rec.model,
        "attempts": rec.attempts,
        "provider_request_id": rec.provider_request_id,
        "reason": rec.error_message,
        "error_kind": rec.error_kind,
        "validation_errors": rec.validation_errors or [],
        "input": rec.input,
        "output": rec.output,
        "history": history(ledger, rec.id),
    }


def queue(ledger: Ledger, workload: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    return [view(ledger, rec) for rec in ledger.review_queue(workload, limit)]


def decide(
    ledger: Ledger,
    record_id: int,
    action: str,
    reviewer: str,
    note: str | None = None,
    output: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Make one reviewer decision; returns the record as it is afterwards."""
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise ReviewError("a review decision needs the reviewer's name")
    if action not in ACTIONS:
        raise ReviewError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    try:
        rec = ledger.record(int(record_id))
    except (KeyError, ValueError):
        raise ReviewError(f"no record {record_id!r} in the ledger") from None
    who = f"record {rec.id} ({rec.workload} {rec.source_id})"
    if rec.state != State.REVIEW_REQUIRED:
        raise ReviewError(f"{who} is {rec.state}, not waiting for review")
    suffix = f": {note.strip()}" if note and note.strip() else ""
    if action == "approve":
        if rec.output is None:
            raise ReviewError(
                f"{who} has no output to approve ({rec.error_message}); edit it to give one, or requeue it"
            )
        change = Change(rec.id, State.COMPLETED, f"approved by {reviewer}{suffix}", {"error_message": None})
    elif action == "reject":
        change = Change(rec.id, State.REJECTED, f"rejected by {reviewer}{suffix}")
    elif action == "requeue":
        change = Change(
            rec.id,
            State.QUEUED,
            f"sent back for another attempt by {reviewer}{suffix}",
            {"output": None, "error_kind": None, "error_message": None, "validation_errors": None},
        )
    else:
        change = _edit(rec, who, reviewer, suffix, output)
    try:
        ledger.transition([change], actor=f"reviewer:{reviewer}", expect_from=State.REVIEW_REQUIRED)
    except IllegalTransition:
        now = ledger.record(rec.id)
        raise ReviewError(f"{who} was decided meanwhile: it is {now.state} now") from None
    return view(ledger, ledger.record(rec.id))


def _edit(rec, who: str, reviewer: str, suffix: str, output: dict[str, Any] | None) -> Change:
    from batch_ai.validation.records import OutputValidator
    from batch_ai.workloads import load_workload

    if not isinstance(output, dict):
        raise ReviewError(f"{who}: an edit needs the corrected output as a JSON object")
    workload = load_workload(rec.workload).with_versions(rec.prompt_version, rec.schema_version)
    verdict = OutputValidator.for_workload(workload).validate(
        json.dumps(output, ensure_ascii=False), rec.source_id, rec.input
    )
    if not verdict.ok:
        raise ReviewError(f"{who}: the edited output is not valid: {'; '.join(verdict.errors)}")
    before = rec.output or {}
    changed = sorted(k for k in set(before) | set(verdict.output) if before.get(k) != verdict.output.get(k))
    was = json.dumps({k: before.get(k) for k in changed}, ensure_ascii=False)
    reason = f"edited and approved by {reviewer}; changed {', '.join(changed) or 'nothing'} (was {was[:500]}){suffix}"
    return Change(
        rec.id,
        State.COMPLETED,
        reason,
        {"output": verdict.output, "validation_errors": None, "error_kind": None, "error_message": None},
    )
