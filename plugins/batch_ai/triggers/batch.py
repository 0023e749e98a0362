"""A trigger that waits for any provider's batch job in the triggerer, without a worker slot.

Unlike the stock provider triggers it ends on *every* terminal status (completed, failed,
expired, cancelled: partial results are collected afterwards), uses the async SDK clients so
it never blocks the triggerer's event loop, backs off between polls, rides out a few failed
polls, and keeps a wall-clock deadline that survives a restart in another triggerer. What a
poll means is decided by :class:`batch_ai.triggers.polling.JobPoller`, as for the sensor.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from batch_ai.triggers.polling import JobPoller


class BatchJobTrigger(BaseTrigger):
    """Poll one provider job until it ends or ``deadline`` (an ISO 8601 wall-clock time) passes."""

    def __init__(
        self,
        provider: str,
        conn_id: str,
        provider_job_id: str,
        deadline: str,
        options: dict[str, Any] | None = None,
        poll_interval: float = 60.0,
        max_poll_interval: float = 600.0,
    ):
        super().__init__()
        self.provider = provider
        self.conn_id = conn_id
        self.provider_job_id = provider_job_id
        self.deadline = deadline
        self.options = options or {}  # what the adapter needs besides the connection (region, ...)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "provider": self.provider,
                "conn_id": self.conn_id,
                "provider_job_id": self.provider_job_id,
                "deadline": self.deadline,
                "options": self.options,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from batch_ai.providers import get_adapter

        adapter = get_adapter(self.provider, self.conn_id, **self.options)
        poller = JobPoller(
            self.provider_job_id, datetime.fromisoformat(self.deadline), self.poll_interval, self.max_poll_interval
        )
        while True:
            try:
                info = await adapter.aget_job(self.provider_job_id)
            except Exception as exc:  # the SDK has retried already; the poller says how long to go on
                self.log.warning(
                    "poll %d of %s job %s failed: %s", poller.failures + 1, self.provider, self.provider_job_id, exc
                )
                event = poller.on_error(exc, _now())
            else:
                event = poller.on_state(info, _now())
                if event is None:
                    self.log.info(
                        "%s job %s is %s %s", self.provider, self.provider_job_id, info.raw_status, info.counts or ""
                    )
            if event is not None:
                yield TriggerEvent(event)
                return
            await asyncio.sleep(poller.next_interval(_now()))


def _now() -> datetime:
    return datetime.now(UTC)
