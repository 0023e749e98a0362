"""A trigger that waits for any provider's batch job in the triggerer, without a worker slot.

Unlike the stock provider triggers it ends on *every* terminal status (completed, failed,
expired, cancelled: partial results are collected afterwards), uses the async SDK clients so
it never blocks the triggerer's event loop, backs off between polls, and rides out a few
failed polls before giving up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

MAX_CONSECUTIVE_POLL_FAILURES = 5


class BatchJobTrigger(BaseTrigger):
    def __init__(
        self,
        provider: str,
        conn_id: str,
        provider_job_id: str,
        options: dict[str, Any] | None = None,
        poll_interval: float = 60.0,
        max_poll_interval: float = 600.0,
        timeout: float = 26 * 3600,
    ):
        super().__init__()
        self.provider = provider
        self.conn_id = conn_id
        self.provider_job_id = provider_job_id
        self.options = options or {}  # what the adapter needs besides the connection (region, ...)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "provider": self.provider,
                "conn_id": self.conn_id,
                "provider_job_id": self.provider_job_id,
                "options": self.options,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "timeout": self.timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from batch_ai.providers import get_adapter

        adapter = get_adapter(self.provider, self.conn_id, **self.options)
        started = time.monotonic()
        interval = self.poll_interval
        failures = 0
        while True:
            try:
                info = await adapter.aget_job(self.provider_job_id)
            except Exception as exc:  # the SDK has retried already; keep waiting a while
                failures += 1
                self.log.warning("poll %d of %s job %s failed: %s", failures, self.provider, self.provider_job_id, exc)
                if failures >= MAX_CONSECUTIVE_POLL_FAILURES:
                    yield TriggerEvent({
                        "outcome": "error",
                        "provider_job_id": self.provider_job_id,
                        "message": f"{failures} polls in a row failed, last: {exc}",
                    })
                    return
            else:
                failures = 0
                if info.terminal:
                    yield TriggerEvent({"outcome": "ended", **info.as_event()})
                    return
                self.log.info(
                    "%s job %s is %s %s", self.provider, self.provider_job_id, info.raw_status, info.counts or ""
                )
            elapsed = time.monotonic() - started
            if elapsed >= self.timeout:
                yield TriggerEvent({
                    "outcome": "error",
                    "provider_job_id": self.provider_job_id,
                    "message": f"job not finished after {elapsed:.0f}s (timeout {self.timeout:.0f}s)",
                    "timed_out": True,
                })
                return
            await asyncio.sleep(min(interval, max(self.timeout - elapsed, 0.1)))
            interval = min(interval * 1.5, self.max_poll_interval)
