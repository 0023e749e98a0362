"""Job claims: who may make the paid call for a job right now.

A claim is held by a live process only: the operating system or the database drops it the
moment its holder dies. So "I cannot take the claim" means a live process is submitting that
job now, and "I took it" means nobody is, whatever the ledger says, and it is safe to ask the
provider whether the job exists before anything else happens.

- PostgreSQL: a session-level advisory lock on a connection of its own (autocommit, so no
  transaction is held open during the provider call); the server releases it when the
  session ends, which a killed worker's does.
- SQLite: a byte-range lock (``fcntl.lockf``) on a file beside the database file, which the
  kernel releases when the process exits; within one process, a lock per job as well, since
  POSIX record locks belong to the process, not the thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator

from sqlalchemy import Engine, text

#: How long a submit waits for another process to finish its paid call for the same job.
WAIT_SECONDS = 600.0
_POLL = 0.2
_local: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


class ClaimTimeout(TimeoutError):
    """Another live process held the job's claim for longer than we waited."""


def _key(token: str) -> int:
    """A signed 64-bit number for the token (PostgreSQL's advisory lock key)."""
    return int.from_bytes(hashlib.sha256(f"batch_ai.job:{token}".encode()).digest()[:8], "big", signed=True)


def _thread_lock(token: str) -> threading.Lock:
    with _local_guard:
        return _local.setdefault(token, threading.Lock())


@contextlib.contextmanager
def claim(engine: Engine, token: str, *, wait: bool = True, timeout: float = WAIT_SECONDS) -> Iterator[bool]:
    """Hold the claim on a job for the ``with`` block. Yields ``True`` when held; with
    ``wait=False`` yields ``False`` at once if a live process holds it."""
    local = _thread_lock(token)
    if not local.acquire(timeout=timeout if wait else 0):
        if wait:
            raise ClaimTimeout(f"job {token} was claimed by another thread of this process for over {timeout:.0f}s")
        yield False
        return
    try:
        if engine.dialect.name == "postgresql":
            with _postgres(engine, token, wait, timeout) as held:
                yield held
        else:
            with _sqlite(engine, token, wait, timeout) as held:
                yield held
    finally:
        local.release()


def _wait_for(try_once, token: str, wait: bool, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if try_once():
            return True
        if not wait:
            return False
        if time.monotonic() >= deadline:
            raise ClaimTimeout(
                f"job {token} is being submitted by another live process (its claim was held for over "
                f"{timeout:.0f}s); try again later"
            )
        time.sleep(_POLL)


@contextlib.contextmanager
def _postgres(engine: Engine, token: str, wait: bool, timeout: float) -> Iterator[bool]:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # advisory locks are the database's, not the schema's: the ledger's schema is in the key
        key = conn.scalar(
            text("select hashtextextended(current_schema() || '/' || :t, 0)"), {"t": f"batch_ai.claim/{token}"}
        )
        held = _wait_for(
            lambda: bool(conn.scalar(text("select pg_try_advisory_lock(:k)"), {"k": key})), token, wait, timeout
        )
        try:
            yield held
        finally:
            if held:
                conn.execute(text("select pg_advisory_unlock(:k)"), {"k": key})


@contextlib.contextmanager
def _sqlite(engine: Engine, token: str, wait: bool, timeout: float) -> Iterator[bool]:
    database = engine.url.database
    if not database or database == ":memory:":  # one process only: the thread lock is the claim
        yield True
        return
    offset = _key(token) & 0x7FFF_FFFF_FFFF
    fd = os.open(f"{database}.claims", os.O_RDWR | os.O_CREAT, 0o644)
    try:

        def try_once() -> bool:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                return True
            except OSError:
                return False

        held = _wait_for(try_once, token, wait, timeout)
        try:
            yield held
        finally:
            if held:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
    finally:
        os.close(fd)
