"""The provider adapter interface: what every batch provider must do, in normalized terms.

Operators, triggers and the pipeline only ever talk to this interface. An adapter turns a
rendered prompt into the provider's request line, submits a job idempotently (finding the
job it already created from our submission token), polls it, streams its results back as
:class:`Result` objects matched by custom id, and makes one real-time call for the sample.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from batch_ai import jsonio
from batch_ai.errors import TRANSIENT_ERRORS, ErrorKind, ProviderCallError, error_kind_for_http_status
from batch_ai.providers.capabilities import ProviderCapabilities, capabilities

if TYPE_CHECKING:  # an annotation only (request_file builds on this module)
    from batch_ai.providers.request_file import RequestFile

__all__ = [
    "TRANSIENT_ERRORS",
    "BatchProvider",
    "ErrorKind",
    "classify_common",
    "JobExpectation",
    "JobInfo",
    "JobRefused",
    "JobStatus",
    "Prompt",
    "RequestOptions",
    "Result",
    "error_kind_for_http_status",
    "jsonl_line",
    "loads_result_line",
    "request_size",
    "split_jsonl",
    "strip_keywords",
    "to_jsonl",
]


class JobStatus(StrEnum):
    PENDING = "pending"  # accepted, not started (validating, queued)
    RUNNING = "running"  # in progress, finalizing, cancelling
    COMPLETED = "completed"  # ended; results for every line that was done (partial success included)
    FAILED = "failed"  # the job as a whole failed (e.g. input rejected at validation)
    EXPIRED = "expired"  # not done within the window; finished lines still returned
    CANCELLED = "cancelled"  # stopped; finished lines still returned


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELLED})


class JobRefused(Exception):
    """The provider refused a whole job when it was created (Anthropic validates a batch then):
    nothing was created or paid for, and the message says which request it objected to."""


@dataclass
class JobInfo:
    provider_job_id: str
    status: JobStatus
    raw_status: str
    counts: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # provider file ids, timestamps
    error: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def as_event(self) -> dict[str, Any]:
        return {
            "provider_job_id": self.provider_job_id,
            "status": str(self.status),
            "raw_status": self.raw_status,
            "counts": self.counts,
            "error": self.error,
        }


@dataclass
class Result:
    """One line of a job's results, or one real-time answer."""

    custom_id: str | None  # None: a line that could not be read (see :meth:`unreadable`)
    output_text: str | None = None
    refusal: str | None = None
    error_kind: ErrorKind | None = None
    error_message: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    #: the provider's id of the request (its support asks for it): kept per attempt in the ledger
    request_id: str | None = None
    line_bytes: int = 0  # the size of its line in the provider's result file (storage accounting)
    #: an embedding: the numbers as the provider sent them (validated, not trusted)
    vector: list[Any] | None = None
    model: str | None = None  # the model the provider says answered (embeddings record it)

    def sized(self, line: bytes) -> Result:
        """This result, with the size of the result line it was read from (and its line end)."""
        self.line_bytes = len(line) + 1
        return self

    @property
    def answered(self) -> bool:
        return self.error_kind is None

    @classmethod
    def unreadable(cls, where: str, number: int, problem: object) -> Result:
        """A result line that cannot be read (cut off, or not in the provider's format). The rest
        are read on; the record it was for gets no result, which makes it a transient error."""
        return cls(
            None, error_kind=ErrorKind.UNKNOWN, error_message=f"{where} line {number} is unreadable: {problem}"[:500]
        )


@dataclass(frozen=True)
class JobExpectation:
    """What a submit attempt knows about the job it may have created before it crashed.

    Providers that can tag a job (metadata, client token, display name) only need the token;
    the rest lets an adapter without tags recognise its job.
    """

    custom_ids: tuple[str, ...]
    not_before: datetime | None  # when the ledger first recorded the intent to submit
    claimed: frozenset[str] = frozenset()  # provider job ids the ledger already holds


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str


@dataclass(frozen=True)
class RequestOptions:
    model: str
    output_schema: dict[str, Any]
    schema_name: str
    max_output_tokens: int
    temperature: float
    endpoint: str = "chat"  # chat, responses or embeddings (ProviderSpec.endpoint)
    dimensions: int | None = None  # embeddings: the vector's length


class BatchProvider(abc.ABC):
    """One provider's batch API behind the common interface."""

    name: str

    def __init__(
        self, conn_id: str, *, region: str | None = None, staging_uri: str | None = None, role_arn: str | None = None
    ):
        self.conn_id = conn_id
        self.caps: ProviderCapabilities = capabilities().provider(self.name)
        self.region = region or self.caps.default_region
        self.staging_uri = staging_uri
        self.role_arn = role_arn

    @property
    def options(self) -> dict[str, Any]:
        """What it takes to build this adapter again (in the triggerer)."""
        return {"region": self.region, "staging_uri": self.staging_uri, "role_arn": self.role_arn}

    @functools.cached_property
    def conn_extra(self) -> dict[str, Any]:
        """The Airflow connection's extras (for the batch_ai_* settings some adapters read)."""
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(self.conn_id).extra_dejson

    @property
    def unsupported_keywords(self) -> frozenset[str]:
        return frozenset(self.caps.extra.get("unsupported_schema_keywords", []))

    def classify(self, exc: BaseException) -> ErrorKind | None:
        """What kind of failure an exception of this provider's SDK is, in the vocabulary record
        retries use (``None``: not a provider failure, a bug to see). Each adapter adds its SDK's."""
        return classify_common(exc)

    @abc.abstractmethod
    def build_request(self, custom_id: str, prompt: Prompt, options: RequestOptions) -> dict[str, Any]:
        """The provider's request line for one record."""

    @abc.abstractmethod
    def submit(
        self, requests: RequestFile, token: str, *, model: str, labels: dict[str, str], dimensions: int | None = None
    ) -> JobInfo:
        """Create a job for the requests (a :class:`~batch_ai.providers.request_file.RequestFile`),
        tagged with ``token`` so :meth:`find_job` can find it. ``dimensions``: an embeddings job's
        vector length, for a provider that sets it on the job rather than in each request."""

    @abc.abstractmethod
    def find_job(self, token: str, expected: JobExpectation | None = None) -> JobInfo | None:
        """The job created earlier for this submission token, if the provider has one."""

    @abc.abstractmethod
    def get_job(self, provider_job_id: str) -> JobInfo: ...

    @abc.abstractmethod
    async def aget_job(self, provider_job_id: str) -> JobInfo:
        """Like :meth:`get_job`, without blocking the triggerer's event loop."""

    @abc.abstractmethod
    def iter_results(self, job: JobInfo) -> Iterator[Result]:
        """Stream a terminal job's result lines, in whatever order the provider returns them."""

    @abc.abstractmethod
    def cancel(self, provider_job_id: str) -> None: ...

    @abc.abstractmethod
    def cleanup(self, job: JobInfo) -> None:
        """Delete what we staged for the job (input and result files)."""

    def staged_files(self, job: JobInfo) -> list[tuple[str, int | None]]:
        """What is still kept for the job at the provider, as (name, bytes; ``None`` where the
        provider does not say): what the retention policy deletes, and reports as freed."""
        return []

    def delete_staged(self, job: JobInfo, names: list[str]) -> None:
        """Delete these of the job's files (names from :meth:`staged_files`)."""
        self.cleanup(job)

    @abc.abstractmethod
    def realtime(self, custom_id: str, prompt: Prompt, options: RequestOptions) -> Result:
        """One synchronous call, as used by the sample step."""


def classify_common(exc: BaseException) -> ErrorKind | None:
    """Failures any provider call can meet: the network (no answer in time, no connection)."""
    import httpx

    if isinstance(exc, ProviderCallError):
        return exc.kind
    if isinstance(exc, (ConnectionError, TimeoutError, httpx.TransportError)):
        return ErrorKind.UNAVAILABLE
    return None


def per_schema(convert):
    """Memoise ``convert(schema, unsupported)`` by the schema object: every request of a run
    carries the same schema, converted once (the result is shared; nobody changes it)."""
    cache: dict[tuple[int, frozenset[str]], tuple[Any, Any]] = {}

    @functools.wraps(convert)
    def once(schema: Any, unsupported: frozenset[str]) -> Any:
        key = (id(schema), unsupported)
        hit = cache.get(key)
        if hit is None or hit[0] is not schema:
            if len(cache) > 64:
                cache.clear()
            hit = cache[key] = (schema, convert(schema, unsupported))
        return hit[1]

    return once


def _strip(schema: Any, unsupported: frozenset[str]) -> Any:
    if isinstance(schema, dict):
        return {k: _strip(v, unsupported) for k, v in schema.items() if k not in unsupported}
    if isinstance(schema, list):
        return [_strip(v, unsupported) for v in schema]
    return schema


@per_schema
def strip_keywords(schema: Any, unsupported: frozenset[str]) -> Any:
    """The schema without keywords the provider's structured-output mode does not accept."""
    return _strip(schema, unsupported)


_LS, _PS = "\u2028".encode(), "\u2029".encode()


def jsonl_line(request: dict[str, Any], default=None) -> bytes:
    """One request as a line of a JSONL upload. U+2028 and U+2029 are written escaped: JSON allows
    them raw inside strings, but a reader that splits lines as Unicode does (``str.splitlines``)
    would cut the line there; only ``\n`` ends a line."""
    data = jsonio.dumps(request, default=default)
    if _LS in data or _PS in data:
        data = data.replace(_LS, b"\\u2028").replace(_PS, b"\\u2029")
    return data + b"\n"


def split_jsonl(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a streamed JSONL body, split on ``\n`` only (not on CR, U+2028 or U+2029, which
    a line-splitter for text would also cut at), without line ends; blank lines skipped."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *complete, rest = rest.split(b"\n")
        for line in complete:
            if line.strip():
                yield line.removesuffix(b"\r")
    if rest.strip():
        yield rest.removesuffix(b"\r")


_NON_FINITE = (b"NaN", b"Infinity")


def loads_result_line(line: bytes) -> Any:
    """A result line. An embedding holding ``NaN`` or ``Infinity`` (not JSON, but what Python's
    own encoder writes) is read, so that validation rejects the vector, not the whole line."""
    try:
        return jsonio.loads(line)
    except ValueError:
        if not any(token in line for token in _NON_FINITE):
            raise
        import json

        return json.loads(line)


def to_jsonl(requests: Sequence[dict[str, Any]]) -> bytes:
    return b"".join(jsonl_line(r) for r in requests)


def request_size(request: dict[str, Any]) -> int:
    """Bytes one request takes in a JSONL upload (what the providers' size limits count)."""
    return len(jsonl_line(request))
