"""Record states and the transitions allowed between them.

This module is the only place that knows the record life cycle. Every change of a
record's state in the ledger goes through :func:`check_transitions`, and an illegal
change raises :class:`IllegalTransition` naming the records involved.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from batch_ai.errors import IllegalTransition

__all__ = [
    "ALLOWED",
    "OPEN_JOBS",
    "REQUEUE_ON_CHANGE",
    "RERUN_STATES",
    "TERMINAL",
    "IllegalTransition",
    "JobState",
    "State",
    "check_transitions",
]


class State(StrEnum):
    QUEUED = "queued"  # accepted from the source, waiting for a batch
    SUBMITTED = "submitted"  # part of a provider job that has not been collected
    COMPLETED = "completed"  # valid output, not yet visible to customers
    INVALID_OUTPUT = "invalid_output"  # the provider answered, the answer failed validation
    PROVIDER_ERROR = "provider_error"  # the provider failed this line (error, expiry, missing)
    REVIEW_REQUIRED = "review_required"  # waits for a person
    PUBLISHED = "published"  # written to the sink
    REJECTED = "rejected"  # a reviewer said no; never published
    DEAD_LETTER = "dead_letter"  # malformed input; never sent to a provider


#: ``None`` stands for "no record yet" (the first insert).
ALLOWED: dict[State | None, frozenset[State]] = {
    None: frozenset({State.QUEUED, State.DEAD_LETTER}),
    # A record that cannot be sent as it is (its rendered request is too big for a job, the
    # prompt template fails on it) waits for a person, found when its request is built.
    State.QUEUED: frozenset({State.SUBMITTED, State.REVIEW_REQUIRED}),
    # Straight to review: a refusal, an output matching a review rule, or the random sample.
    # Back to queued: the provider refused the whole job before answering any line, and its
    # records go round in smaller jobs until the line it refused is found.
    State.SUBMITTED: frozenset(
        {State.COMPLETED, State.INVALID_OUTPUT, State.PROVIDER_ERROR, State.REVIEW_REQUIRED, State.QUEUED}
    ),
    State.COMPLETED: frozenset({State.PUBLISHED, State.REVIEW_REQUIRED, State.QUEUED}),
    # An invalid output is re-run only when its source content changes, or by a backfill
    # with a new prompt or schema version (the pipeline refuses to resend it unchanged).
    State.INVALID_OUTPUT: frozenset({State.QUEUED, State.REVIEW_REQUIRED}),
    State.PROVIDER_ERROR: frozenset({State.QUEUED, State.REVIEW_REQUIRED}),
    # A reviewer approves (or edits and approves: completed), rejects, or sends it round again.
    State.REVIEW_REQUIRED: frozenset({State.COMPLETED, State.REJECTED, State.QUEUED}),
    # Content changed at the source: the record goes round again.
    State.PUBLISHED: frozenset({State.QUEUED}),
    State.REJECTED: frozenset({State.QUEUED}),
    # A malformed row is kept under a key made from its content; once fixed at the source
    # it arrives as a new record under its real id, so a dead letter never moves on.
    State.DEAD_LETTER: frozenset(),
}

#: States in which a record is waiting on nothing we control.
TERMINAL = frozenset({State.PUBLISHED, State.REJECTED, State.DEAD_LETTER})
#: States a backfill may send round again (``rerun_states``); also those from which a changed
#: source row does. Not ``submitted``: the job in flight answers for the content it was sent.
REQUEUE_ON_CHANGE = frozenset(s for s, targets in ALLOWED.items() if s and State.QUEUED in targets) - {State.SUBMITTED}
#: The states a backfill's ``rerun_states`` param may name, in the order of the life cycle.
RERUN_STATES = [str(s) for s in State if s in REQUEUE_ON_CHANGE]


class JobState(StrEnum):
    """A provider job's state in the ledger (its provider's own status is in its details)."""

    PLANNED = "planned"  # its records chosen and its token written, before any paid call
    SUBMITTED = "submitted"  # the provider accepted it; not collected yet
    RELEASED = "released"  # planned by a run that died, and not found at the provider: its records were freed
    EMPTY = "empty"  # nothing was left to submit when its turn came
    SPLIT = "split"  # the provider refused it as a whole; its records went into smaller jobs
    # collected, ending with the provider's normalized status
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


#: Jobs a run still has to finish: submit, or wait for and collect.
OPEN_JOBS = frozenset({JobState.PLANNED, JobState.SUBMITTED})


def check_transitions(changes: Iterable[tuple[object, State | str | None, State | str]]) -> None:
    """Raise if any ``(record, from_state, to_state)`` change is not allowed.

    All offenders are named in one error, so a bad bulk update is diagnosed at once.
    """
    bad = []
    for record, src, dst in changes:
        src_state = State(src) if src is not None else None
        if State(dst) not in ALLOWED[src_state]:
            bad.append(f"record {record}: {src_state or 'new'} -> {State(dst)}")
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise IllegalTransition(f"illegal state transition for {len(bad)} record(s): {shown}")
