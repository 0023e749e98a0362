"""The one decision of what a poll of a provider job means, shared by the trigger's loop (in the
triggerer) and the sensor's ``poke`` (on a worker), so the two cannot drift.

A poll either answers (the job's state) or fails. A terminal state ends the wait (``ended``); a
wall-clock deadline past ends it (``timeout``); a few failed polls in a row end it (``error``),
and fewer are ridden out. The deadline is a wall-clock time, not a monotonic one: a trigger is
serialized to the metadata database and may resume in another triggerer process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from batch_ai.providers.base import JobInfo

MAX_CONSECUTIVE_POLL_FAILURES = 5
WaitStatus = Literal["ended", "error", "timeout"]
STATUSES = ("ended", "error", "timeout")


@dataclass
class JobPoller:
    """Decides, poll by poll, whether a wait is over: ``on_state`` and ``on_error`` return the
    wait's event when it is, else ``None`` (poll again after :meth:`next_interval`)."""

    provider_job_id: str
    deadline: datetime
    poll_interval: float = 60.0
    max_poll_interval: float = 600.0
    failures: int = 0
    _interval: float = field(default=0.0, repr=False)

    def on_state(self, info: JobInfo, now: datetime) -> dict[str, Any] | None:
        self.failures = 0
        if info.terminal:
            event = info.as_event()
            return {**event, "status": "ended", "job_status": event["status"]}
        if now >= self.deadline:
            return self._timeout(f"job still {info.raw_status} at the deadline {self.deadline.isoformat()}")
        return None

    def on_error(self, exc: BaseException, now: datetime) -> dict[str, Any] | None:
        self.failures += 1
        if now >= self.deadline:
            return self._timeout(f"no answer by the deadline {self.deadline.isoformat()} (last: {exc})")
        if self.failures >= MAX_CONSECUTIVE_POLL_FAILURES:
            return {
                "status": "error",
                "provider_job_id": self.provider_job_id,
                "message": f"{self.failures} polls in a row failed, last: {exc}",
            }
        return None

    def next_interval(self, now: datetime) -> float:
        """Seconds to the next poll: backing off, never past the deadline."""
        self._interval = self.poll_interval if not self._interval else min(self._interval * 1.5, self.max_poll_interval)
        return max(0.1, min(self._interval, (self.deadline - now).total_seconds()))

    def _timeout(self, message: str) -> dict[str, Any]:
        return {"status": "timeout", "provider_job_id": self.provider_job_id, "message": message}


class BadWaitEvent(ValueError):
    """A trigger event that is not one this wait can have sent."""


def check_event(event: Any) -> dict[str, Any]:
    """The event a resumed wait got, checked: a dict with a known ``status`` and the job's id."""
    if not isinstance(event, dict) or event.get("status") not in STATUSES or not event.get("provider_job_id"):
        raise BadWaitEvent(f"not an event of the batch-ai wait: {event!r:.300}")
    if event["status"] == "ended" and not event.get("job_status"):
        raise BadWaitEvent(f"an ended wait's event carries the job's status: {event!r:.300}")
    return event
