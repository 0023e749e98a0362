"""Per-record output validation: the same checks for real-time samples and batch results."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from batch_ai import jsonio
from batch_ai.validation.safety import texts, unsafe_content


@dataclass
class Verdict:
    output: dict[str, Any] | None
    errors: list[str] = field(default_factory=list)
    #: why a valid output must still be seen by a person (it mentions another record's id)
    review: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def _parse(text: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The output as a JSON object, or why it is not one."""
    if text is None or not text.strip():
        return None, "empty output"
    try:
        output = jsonio.loads(text)
    except (jsonio.JSONDecodeError, RecursionError) as exc:
        why = f"{exc.msg} at char {exc.pos}" if isinstance(exc, jsonio.JSONDecodeError) else "nested too deep"
        return None, f"output is not JSON ({why}): {text[:80]!r}"
    if not isinstance(output, dict):
        return None, f"output is a JSON {type(output).__name__}, not an object"
    return output, None


class OutputValidator:
    """Checks one model output against a workload's schema and validation rules."""

    def __init__(self, output_schema: dict[str, Any], rules, id_regex: re.Pattern | None = None):
        import jsonschema_rs

        # a compiled validator says whether an output is valid (in well under a microsecond);
        # jsonschema words what is wrong, for the few that are not
        self._is_valid = jsonschema_rs.Draft202012Validator(output_schema).is_valid
        self.schema_validator = jsonschema.Draft202012Validator(output_schema)
        self.rules = rules
        self.id_regex = id_regex  # what other records' source ids look like in text

    #: results a collect validates and writes at once
    chunk = 5000

    @classmethod
    def for_workload(cls, workload):
        """The workload's validator: this one, or for embeddings a
        :class:`~batch_ai.validation.vectors.VectorValidator` (no text checks on numbers)."""
        if workload.embeds:
            from batch_ai.validation.vectors import VectorValidator

            return VectorValidator.for_workload(workload)
        return cls(workload.output_schema, workload.spec.validation, workload.spec.source.id_regex())

    def check(self, result, source_id: str, source: dict[str, Any] | None = None) -> Verdict:
        """Check one answered :class:`~batch_ai.providers.base.Result`."""
        return self.validate(result.output_text, source_id, source)

    def is_valid(self, output: dict[str, Any]) -> bool:
        try:
            return self._is_valid(output)
        except (ValueError, OverflowError):  # a value it cannot take (an integer beyond 128 bits)
            return self.schema_validator.is_valid(output)

    def validate(self, text: str | None, source_id: str, source: dict[str, Any] | None = None) -> Verdict:
        """Check one output; ``source`` (the record's input) is what span rules point into."""
        output, problem = _parse(text)
        if problem:
            return Verdict(None, [problem])
        by_field = self._rule_errors(output)
        if not self.is_valid(output):
            self._schema_errors(output, by_field)
        errors = [m for messages in by_field.values() for m in messages]
        strings = texts(output)
        errors += self._content_errors(output, str(source_id), source, strings)
        review = None
        if self.rules.foreign_ids != "ignore":
            foreign = self.foreign_ids(output, str(source_id), strings=strings)
            if foreign:
                message = (
                    f"{foreign[0]}: mentions {foreign[1]!r}, the id of another record (a prompt injection may ask that)"
                )
                if self.rules.foreign_ids == "invalid":
                    errors.append(message)
                else:
                    review = message
        return Verdict(output, list(dict.fromkeys(errors)), review)

    def _rule_errors(self, output: dict[str, Any]) -> dict[str, list[str]]:
        """The workload's own rules, by top-level field (so each problem is said once)."""
        r = self.rules
        by_field: dict[str, list[str]] = {}
        for name in r.required:
            if output.get(name) in (None, "", []):
                by_field.setdefault(name, []).append(f"{name}: required and missing or empty")
        for name, allowed in r.enums.items():
            if name in output and output[name] not in allowed:
                by_field.setdefault(name, []).append(f"{name}: {str(output[name])[:60]!r} is not one of {allowed}")
        for name, limit in r.max_length.items():
            value = output.get(name)
            if isinstance(value, str) and len(value) > limit:
                by_field.setdefault(name, []).append(f"{name}: {len(value)} characters, over the limit of {limit}")
        return by_field

    def _schema_errors(self, output: dict[str, Any], by_field: dict[str, list[str]]) -> None:
        """The schema's findings, where the workload's rules have not already said it in their words."""
        for e in sorted(self.schema_validator.iter_errors(output), key=lambda e: list(map(str, e.absolute_path))):
            field = str(e.absolute_path[0]) if e.absolute_path else None
            if e.validator == "required":
                missing = [n for n in e.validator_value if n not in output]
                field = missing[0] if missing else None
            if field in by_field and e.validator != "additionalProperties":
                continue
            path = "/".join(map(str, e.absolute_path)) or "<root>"
            by_field.setdefault(field or "<root>", []).append(f"schema: {path}: {e.message[:200]}")

    def _content_errors(
        self, output: dict[str, Any], source_id: str, source: dict[str, Any] | None, strings: list[str]
    ) -> list[str]:
        """Nothing unsafe to show, the echoed id, the spans into the source."""
        r = self.rules
        errors = []
        if r.no_html:
            found = unsafe_content(output, r.allowed_link_hosts, strings=strings)
            errors += [f"{path}: {why}" for path, why in found]
        if r.echo_id_field:
            echoed = output.get(r.echo_id_field)
            if str(echoed) != source_id:
                errors.append(f"{r.echo_id_field}: echoed {str(echoed)[:60]!r} but the record is {source_id!r}")
        for rule in r.spans:
            errors += span_errors(output.get(rule.field), (source or {}).get(rule.source_field), rule)
        return errors

    def foreign_ids(
        self, output: Any, source_id: str, path: str = "", strings: list[str] | None = None
    ) -> tuple[str, str] | None:
        """The first (path, id) where a string of the output names a source id other than the record's."""
        if self.id_regex is None:
            return None
        if not path and all(m == source_id for m in self.id_regex.findall("\n".join(strings or texts(output)))):
            return None  # the common case, decided in one scan
        if isinstance(output, str):
            other = next((m for m in self.id_regex.findall(output) if m != source_id), None)
            return (path or "<root>", other) if other else None
        items = output.items() if isinstance(output, dict) else enumerate(output) if isinstance(output, list) else ()
        for key, value in items:
            found = self.foreign_ids(
                value, source_id, f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
            )
            if found:
                return found
        return None


def span_errors(spans: Any, text: Any, rule) -> list[str]:
    """Each span (``{start, end[, text]}``) must lie inside the source text and, when it quotes
    the text, quote it exactly: a redaction that points elsewhere would hide the wrong words."""
    if not spans:
        return []
    if not isinstance(text, str):
        return [f"{rule.field}: spans given, but the record has no text in {rule.source_field!r}"]
    errors = []
    for i, span in enumerate(spans if isinstance(spans, list) else []):
        start, end = (span.get("start"), span.get("end")) if isinstance(span, dict) else (None, None)
        if not (isinstance(start, int) and isinstance(end, int)):
            errors.append(f"{rule.field}[{i}]: a span needs integer start and end")
        elif not 0 <= start < end <= len(text):
            errors.append(
                f"{rule.field}[{i}]: span {start}-{end} is outside the {len(text)} characters of {rule.source_field}"
            )
        elif "text" in span and text[start:end] != span["text"]:
            errors.append(
                f"{rule.field}[{i}]: span {start}-{end} reads {text[start:end][:40]!r}, not {str(span['text'])[:40]!r}"
            )
    return errors
