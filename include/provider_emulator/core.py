"""What every provider module shares: the job clock and the answer to one request line.

A provider module turns requests from its own wire format into (key, schema, text) and the
:class:`LineOutcome` back into its own result format; the model, the faults and the time a
job takes are the same for all four.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from provider_emulator import model
from provider_emulator.faults import ProviderFaults, line_fault, roll

#: Seconds a job spends in each phase, multiplied by the provider's ``time_scale``.
PHASE_SECONDS = {"validating": 0.3, "running": 1.0, "finalizing": 0.3}

REFUSAL_TEXT = "I'm sorry, but I can't help with that request."

DEFAULT_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Timeline:
    """When a job created at ``created`` moves from phase to phase, on the scaled clock."""

    def __init__(self, created: float, scale: float):
        self.created = created
        self.validated = created + PHASE_SECONDS["validating"] * scale
        self.ran = self.validated + PHASE_SECONDS["running"] * scale
        self.finalized = self.ran + PHASE_SECONDS["finalizing"] * scale
        self.scale = scale

    def phase(self, now: float | None = None) -> str:
        return self.position(now)[0]

    def position(self, now: float | None = None) -> tuple[str, float]:
        """The phase at ``now``, and how far into it (0 to 1)."""
        now = time.time() if now is None else now
        start = self.created
        for phase, end in (("validating", self.validated), ("running", self.ran), ("finalizing", self.finalized)):
            if now < end:
                return phase, (now - start) / max(end - start, 1e-9)
            start = end
        return "ended", 1.0

    def done_by(self, at: float, total: int) -> int:
        """How many of ``total`` lines were finished at time ``at``."""
        if at <= self.validated:
            return 0
        return min(total, int(total * (at - self.validated) / max(self.ran - self.validated, 1e-9)))

    def cancel_settles(self, requested_at: float) -> float:
        return requested_at + PHASE_SECONDS["finalizing"] * self.scale


class JobFlow:
    """The one clock-driven life of an emulated batch job, for all four providers.

    ``validating -> running -> finalizing -> ended`` over the scaled clock (:class:`Timeline`),
    computed whenever a job is read, so no background thread is needed. A provider's module
    names its statuses per phase (:attr:`PHASES`: steps of ``(share of the phase, status)``)
    and says how its jobs validate, fail, start and finish; a cancel settles after a short
    pause with the lines done by then. Its jobs carry ``created_at``, ``faults``,
    ``cancel_requested_at`` and ``validated``.
    """

    #: per phase of the clock, the provider's status from each share of the phase on
    PHASES: ClassVar[dict[str, list[tuple[float, str]]]]
    #: what a job failed by the ``failed_validation`` fault reports
    INVALID_INPUT: ClassVar[Any]
    lock: threading.RLock
    state: Any  # the emulator's shared state (faults, logs, busy time)

    def advance(self, job) -> None:
        """Bring a job's status up to date with the (scaled) clock; the time spent validating and
        answering is the provider's own (kept per provider: ``/_emulator/busy``)."""
        started = time.perf_counter()
        try:
            self._advance(job)
        finally:
            self.state.busy[type(self).__module__.rsplit(".", 1)[-1].removesuffix("_api")] += (
                time.perf_counter() - started
            )

    def _advance(self, job) -> None:
        with self.lock:
            if self.ended(job):
                return
            now = time.time()
            tl = Timeline(job.created_at, job.faults.time_scale)
            if job.cancel_requested_at is not None:
                if now >= tl.cancel_settles(job.cancel_requested_at):
                    self.finish(job, "cancelled", tl.done_by(job.cancel_requested_at, self.size(job)))
                return
            phase, share = tl.position(now)
            if phase != "validating" and not job.validated:
                problem = self.validate(job) or (
                    self.INVALID_INPUT if job.faults.job_outcome == "failed_validation" else None
                )
                if problem:
                    self.fail(job, problem, tl.validated)
                    return
                job.validated = True
                self.started(job, tl.validated)
            if phase != "ended":
                self.show(job, next(s for start, s in reversed(self.PHASES[phase]) if share >= start), now)
            elif job.faults.job_outcome == "expired":
                self.finish(job, "expired", int(self.size(job) * job.faults.expire_done_fraction))
            else:
                self.finish(job, "completed", self.size(job))

    # what each provider's module says ------------------------------------------------------
    def ended(self, job) -> bool:
        raise NotImplementedError

    def size(self, job) -> int:
        raise NotImplementedError

    def show(self, job, status: str, now: float) -> None:
        raise NotImplementedError

    def validate(self, job) -> Any:
        """What is wrong with the job's input (falsy: nothing); read once, when validation ends."""
        return None

    def fail(self, job, problem: Any, at: float) -> None:
        raise NotImplementedError

    def started(self, job, at: float) -> None:
        """The job passed validation (at ``at``)."""

    def finish(self, job, outcome: str, done: int) -> None:
        """End the job: ``completed``, ``expired`` or ``cancelled``, with its first ``done`` lines done."""
        raise NotImplementedError


@dataclass
class LineOutcome:
    """The model's answer to one request, after faults: what a provider module formats."""

    key: str
    fault: str | None  # "line_error", "refusal", a malformed kind, or None
    text: str | None  # the answer as text (JSON unless malformed); None for errors and refusals
    answer: dict[str, Any] | None  # the well-formed answer object, when there is one
    input_tokens: int
    output_tokens: int

    @property
    def refused(self) -> bool:
        return self.fault == "refusal"

    @property
    def failed(self) -> bool:
        return self.fault == "line_error"


#: How often each request picked for repeated errors has failed so far (``line_error_repeats``).
_failures: dict[str, int] = {}
_failures_lock = threading.Lock()


def forget_failures() -> None:
    with _failures_lock:
        _failures.clear()


def _repeated_error(faults: ProviderFaults, prompt_text: str) -> bool:
    content = hashlib.sha256(prompt_text.encode()).hexdigest()
    if roll(faults.seed, content, "line_error") >= faults.line_error_rate:
        return False
    with _failures_lock:
        if _failures.get(content, 0) >= faults.line_error_repeats:
            return False
        _failures[content] = _failures.get(content, 0) + 1
        return True


def line_fault_for(faults: ProviderFaults, key: str, prompt_text: str) -> str | None:
    """The fault one request gets: by its key, or (``line_error_repeats``) its errors by its content."""
    if faults.line_error_repeats:
        if _repeated_error(faults, prompt_text):
            return "line_error"
        return line_fault(faults.model_copy(update={"line_error_rate": 0.0}), key)
    return line_fault(faults, key)


def answer(
    faults: ProviderFaults,
    key: str,
    schema: dict[str, Any] | None,
    user_text: str,
    prompt_text: str,
    *,
    realtime: bool = False,
    log=None,
    model_name: str = "",
) -> LineOutcome:
    """Answer one request; ``log(key, fault)`` records a fault that was applied."""
    fault = line_fault_for(faults, key, prompt_text) if faults.realtime_faults or not realtime else None
    if fault and log:
        log(key, fault)
    tokens_in = model.estimate_tokens(prompt_text)
    if fault == "line_error":
        return LineOutcome(key, fault, None, None, tokens_in, 0)
    if fault == "refusal":
        return LineOutcome(key, fault, None, None, tokens_in, model.estimate_tokens(REFUSAL_TEXT))
    schema = schema or DEFAULT_SCHEMA
    output = model.answer(schema, user_text, key, faults.model_error_rates.get(model_name, 0.0))
    if fault:
        text = malform(output, schema, fault)
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        return LineOutcome(key, fault, text, parsed, tokens_in, model.estimate_tokens(text))
    text = model.dumps(output)
    return LineOutcome(key, None, text, output, tokens_in, model.estimate_tokens(text))


def malform(output: dict[str, Any], schema: dict[str, Any], kind: str) -> str:
    """A realistic bad answer of the given kind."""
    props = schema.get("properties", {})
    text_fields = [
        k
        for k, v in props.items()
        if v.get("type") == "string" and "enum" not in v and not k.endswith("id") and k != "language"
    ]
    enum_fields = [k for k, v in props.items() if "enum" in v]
    id_fields = [k for k in props if k.endswith("_id") or k == "id"]
    out = dict(output)
    if kind == "non_json":
        text = model.dumps(out)
        return text[: max(1, len(text) // 2)]  # cut off mid-answer, as a truncated generation is
    if kind == "missing_field" and out:
        required = schema.get("required") or list(out)
        out.pop(required[0], None)
    elif kind == "bad_enum" and enum_fields:
        out[enum_fields[0]] = "unsure"
    elif kind == "html" and text_fields:
        out[text_fields[0]] = f"<b>{out[text_fields[0]]}</b><script>alert('x')</script>"
    elif kind == "overlong" and text_fields:
        out[text_fields[0]] = (str(out[text_fields[0]]) + " ") * 40
    elif kind == "wrong_id" and id_fields:
        out[id_fields[0]] = f"{out[id_fields[0]]}-X"
    return model.dumps(out)


class BadInput(ValueError):
    """An input file a job cannot run on; the message is what the provider would report."""


def jsonl_lines(data: bytes) -> list[str]:
    """The lines of a JSONL file, split on ``\n`` only, as the providers do: a raw U+2028 or CR
    inside a JSON string is part of its line (``str.splitlines`` would cut there)."""
    return [line.removesuffix(b"\r").decode("utf-8", "replace") for line in data.split(b"\n")]


def jsonl_objects(data: bytes | None, uri: str, required_key: str) -> list[dict[str, Any]]:
    """The objects of a JSONL input file, each with a JSON object under ``required_key``."""
    if data is None:
        raise BadInput(f"Input file {uri} does not exist.")
    items = []
    for n, raw in enumerate(jsonl_lines(data), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError:
            raise BadInput(f"Line {n} of {uri} is not valid JSON.") from None
        if not isinstance(item, dict) or not isinstance(item.get(required_key), dict):
            raise BadInput(f"Line {n} of {uri} has no {required_key!r} object.")
        items.append(item)
    return items


def rejected_line(faults: ProviderFaults, items: list[Any]) -> int | None:
    """The 1-based number of the first request the provider refuses (``reject_text``), or ``None``."""
    if not faults.reject_text:
        return None
    for n, item in enumerate(items, start=1):
        text = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
        if faults.reject_text in text:
            return n
    return None


def shuffled(items: list, faults: ProviderFaults, salt: str) -> list:
    if faults.shuffle:
        items = list(items)
        model.rng_for(salt, str(faults.seed)).shuffle(items)
    return items
