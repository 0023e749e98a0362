"""The one owner of "is this worth retrying": every error batch-ai raises says so itself.

``retryable`` is the whole contract: the operators turn an error that is not into a task that
fails at once (no retry would fix it), and the Airflow retry policy retries one that is. A
provider's own exceptions are classified by their adapter into the same :class:`ErrorKind`
vocabulary that record retries use (:meth:`BatchProvider.classify`), so a rate limit means
the same thing for a whole task as for one result line.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorKind(StrEnum):
    """Why a call or a line has no usable answer. Transient kinds are worth trying again."""

    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    UNAVAILABLE = "unavailable"  # the provider could not be reached (network, timeout)
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    MISSING_RESULT = "missing_result"
    JOB_FAILED = "job_failed"
    BAD_REQUEST = "bad_request"
    AUTHENTICATION = "authentication"  # the credentials were refused
    REFUSAL = "refusal"
    INVALID_OUTPUT = "invalid_output"
    UNKNOWN = "unknown"


TRANSIENT_ERRORS = frozenset(
    {
        ErrorKind.RATE_LIMITED,
        ErrorKind.SERVER_ERROR,
        ErrorKind.UNAVAILABLE,
        ErrorKind.EXPIRED,
        ErrorKind.CANCELLED,
        ErrorKind.MISSING_RESULT,
    }
)


def error_kind_for_http_status(status: int) -> ErrorKind:
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status in (401, 403):
        return ErrorKind.AUTHENTICATION
    if status >= 500:
        return ErrorKind.SERVER_ERROR
    return ErrorKind.BAD_REQUEST


class BatchAIError(Exception):
    """Base of every error batch-ai raises on purpose; the message says what to do."""

    retryable: ClassVar[bool] = False


class StageError(BatchAIError):
    """A stage cannot go on (a missing source file, a budget, a failed sample): not retried."""


class WorkloadError(BatchAIError, ValueError):
    """A workload's files are wrong; names the file and the field."""

    def __init__(self, path, message: str):
        super().__init__(f"{path}: {message}")


class IllegalTransition(BatchAIError, ValueError):
    """A state change the record life cycle does not allow."""


class ReviewError(BatchAIError, ValueError):
    """A review decision that cannot be made; the message says why."""


class AmbiguousJob(BatchAIError):
    """More than one provider job could be the one a crashed submit created. Retried: once the
    candidates end, their custom ids tell which is ours."""

    retryable = True


class ClaimTimeout(BatchAIError, TimeoutError):
    """Another live process held a job's claim for longer than we waited: retried later."""

    retryable = True


class ProviderCallError(BatchAIError):
    """A call to a provider failed, classified by its adapter (after the SDK's own retries)."""

    def __init__(self, kind: ErrorKind, message: str):
        super().__init__(message)
        self.kind = kind

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.kind in TRANSIENT_ERRORS
