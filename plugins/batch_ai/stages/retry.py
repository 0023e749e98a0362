"""The ``retry_<n>.requeue`` and ``review`` tasks: send round again what failed transiently, within
the attempt cap; send the rest to a person."""

from __future__ import annotations

import json
import logging
from collections import Counter

from batch_ai.errors import TRANSIENT_ERRORS
from batch_ai.ledger.states import State
from batch_ai.ledger.store import Change, Ledger
from batch_ai.stages.run import ACTOR, RunInfo
from batch_ai.workloads import Workload

log = logging.getLogger(__name__)


def requeue_for_retry(
    workload: Workload, ledger: Ledger, run: RunInfo, round_no: int, *, requeue: bool = True
) -> dict[str, int]:
    """Queue again the records whose provider error is transient and whose attempts are not used
    up; send the others (attempt cap reached, or an error a retry will not fix) to review.

    Looks at every such record of the workload, so what failed on an earlier night is taken too.
    With ``requeue=False`` (after the last round) only the review part is done: what could still
    be retried waits for the next run.
    """
    cap = workload.spec.retry.max_attempts
    transient_kinds = {str(k) for k in TRANSIENT_ERRORS}

    def decide(rec) -> Change | None:
        transient = rec.error_kind in transient_kinds
        if transient and rec.attempts < cap:
            if not requeue:
                return None
            return Change(rec.id, State.QUEUED, f"retry round {round_no}: {rec.error_kind} on attempt {rec.attempts}")
        if transient:
            return Change(
                rec.id,
                State.REVIEW_REQUIRED,
                f"still {rec.error_kind} after {rec.attempts} attempts (the cap is {cap})",
            )
        return Change(rec.id, State.REVIEW_REQUIRED, f"{rec.error_kind} is not fixed by a retry")

    changes = ledger.move(workload.record_key(), State.PROVIDER_ERROR, decide, actor=ACTOR, run_id=run.run_id)
    outcome = Counter(str(c.to) for c in changes)
    summary = {"requeued": outcome[str(State.QUEUED)], "to_review": outcome[str(State.REVIEW_REQUIRED)]}
    log.info(
        "%s of %s: %s",
        f"retry round {round_no}" if requeue else "after the retry rounds",
        workload.name,
        json.dumps(summary),
    )
    return summary


def backoff_seconds(workload: Workload, round_no: int) -> float:
    r = workload.spec.retry
    return r.backoff_seconds * r.backoff_factor ** (round_no - 1)
