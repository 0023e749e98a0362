"""Faults the emulator injects on demand, reproducibly (a seed and the custom id decide).

Only faults a real provider can produce are offered: HTTP errors on any call, a job that
fails validation or expires part-way, per-line errors, malformed or refused answers, shuffled
result order and slow jobs.
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MalformedKind = Literal["non_json", "missing_field", "bad_enum", "html", "overlong", "wrong_id"]


class HttpFault(BaseModel):
    """Answer the next ``count`` matching calls with an HTTP error instead of serving them."""

    model_config = ConfigDict(extra="forbid")
    status: int = Field(429, ge=400, le=599)
    count: int = Field(1, ge=1)
    method: str | None = None  # any method when unset
    path: str = ".*"  # regular expression matched against the request path
    should_retry: bool | None = None  # sets x-should-retry: true/false when given


class SlowResponse(BaseModel):
    """Serve the next ``count`` matching calls, then hold each answer ``seconds`` before sending it:
    the provider has done the work (created the job) and the caller does not know yet."""

    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(gt=0)
    count: int = Field(1, ge=1)
    method: str | None = None
    path: str = ".*"


class ProviderFaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    #: Seconds a job spends in each phase (validating, in progress, finalizing) = scale × base.
    time_scale: float = Field(1.0, ge=0)
    shuffle: bool = False
    line_error_rate: float = Field(0.0, ge=0, le=1)
    line_error_status: int = Field(500, ge=400, le=599)
    #: Per-line errors that follow the request instead of the line: a request picked (by its
    #: content, in any job) fails this many times, then is answered. Unset: each line rolls alone.
    line_error_repeats: int | None = Field(None, ge=1)
    refusal_rate: float = Field(0.0, ge=0, le=1)
    #: Whether the per-line faults (errors, refusals, malformed answers) also hit real-time calls.
    realtime_faults: bool = True
    malformed: dict[MalformedKind, float] = Field(default_factory=dict)
    job_outcome: Literal["normal", "failed_validation", "expired"] = "normal"
    #: A request whose text holds this is one the provider refuses: a job with such a line fails
    #: validation as a whole, naming the line (Anthropic refuses the create call), as one bad
    #: request in a file does at the real services.
    reject_text: str | None = None
    #: With ``job_outcome: expired``, the share of lines finished before the window closed.
    expire_done_fraction: float = Field(0.5, ge=0, le=1)
    http_errors: list[HttpFault] = Field(default_factory=list)
    slow_responses: list[SlowResponse] = Field(default_factory=list)
    #: Per model name, the share of enum answers (labels, categories) that are wrong: a weaker
    #: model, for evaluations. Models not named answer as well as the keywords allow.
    model_error_rates: dict[str, float] = Field(default_factory=dict)


class BedrockFaults(ProviderFaults):
    #: The real service rejects jobs below a per-model minimum (commonly 100 records); set it here.
    min_records_per_job: int = Field(100, ge=1)


PROVIDERS = ("openai", "anthropic", "vertex", "bedrock")


class FaultConfig(BaseModel):
    """Fault settings per provider; each starts with no faults and jobs of about two seconds."""

    model_config = ConfigDict(extra="forbid")
    openai: ProviderFaults = ProviderFaults()
    anthropic: ProviderFaults = ProviderFaults()
    vertex: ProviderFaults = ProviderFaults()
    bedrock: BedrockFaults = BedrockFaults()


def roll(seed: int, key: str, what: str) -> float:
    """A number in [0, 1) fixed by seed, key and purpose."""
    digest = hashlib.sha256(f"{seed}:{what}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def line_fault(faults: ProviderFaults, custom_id: str) -> str | None:
    """Which fault, if any, one batch line gets: ``line_error``, ``refusal`` or a malformed kind."""
    if roll(faults.seed, custom_id, "line_error") < faults.line_error_rate:
        return "line_error"
    if roll(faults.seed, custom_id, "refusal") < faults.refusal_rate:
        return "refusal"
    for kind, rate in sorted(faults.malformed.items()):
        if roll(faults.seed, custom_id, kind) < rate:
            return kind
    return None


class HttpFaultQueue:
    """Pending HTTP faults, consumed as matching requests arrive."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []

    def load(self, faults: list[BaseModel]) -> None:
        with self._lock:
            self._pending = [f.model_dump() for f in faults]

    def take(self, method: str, path: str) -> dict[str, Any] | None:
        with self._lock:
            for fault in self._pending:
                if fault["count"] > 0 and (fault["method"] in (None, method)) and re.search(fault["path"], path):
                    fault["count"] -= 1
                    return dict(fault)
        return None
