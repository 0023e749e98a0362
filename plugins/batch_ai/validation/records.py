"""Per-record output validation: the same checks for real-time samples and batch results."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema

# A tag (<b>, </div>, <img src=...>), an encoded script tag, or a javascript: URL.
HTML_PATTERN = r"<\s*/?\s*[a-zA-Z][a-zA-Z0-9-]*(?:\s[^<>]*)?/?\s*>|&lt;\s*/?\s*script|javascript\s*:"
_HTML = re.compile(HTML_PATTERN, re.I)


@dataclass
class Verdict:
    output: dict[str, Any] | None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class OutputValidator:
    """Checks one model output against a workload's schema and validation rules."""

    def __init__(self, output_schema: dict[str, Any], rules):
        self.schema_validator = jsonschema.Draft202012Validator(output_schema)
        self.rules = rules

    def validate(self, text: str | None, source_id: str, source: dict[str, Any] | None = None) -> Verdict:
        """Check one output; ``source`` (the record's input) is what span rules point into."""
        if text is None or not text.strip():
            return Verdict(None, ["empty output"])
        try:
            output = json.loads(text)
        except json.JSONDecodeError as exc:
            return Verdict(None, [f"output is not JSON ({exc.msg} at char {exc.pos}): {text[:80]!r}"])
        if not isinstance(output, dict):
            return Verdict(None, [f"output is a JSON {type(output).__name__}, not an object"])

        r = self.rules
        by_field: dict[str, list[str]] = {}  # by top-level field, so each problem is said once
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
        # the schema's findings, where the workload's rules have not already said it in their words
        for e in sorted(self.schema_validator.iter_errors(output), key=lambda e: list(map(str, e.absolute_path))):
            field = str(e.absolute_path[0]) if e.absolute_path else None
            if e.validator == "required":
                missing = [n for n in e.validator_value if n not in output]
                field = missing[0] if missing else None
            if field in by_field and e.validator != "additionalProperties":
                continue
            path = "/".join(map(str, e.absolute_path)) or "<root>"
            by_field.setdefault(field or "<root>", []).append(f"schema: {path}: {e.message[:200]}")
        errors = [m for messages in by_field.values() for m in messages]
        if r.no_html:
            errors.extend(f"{path}: contains HTML or script" for path in _html_fields(output))
        if r.echo_id_field:
            echoed = output.get(r.echo_id_field)
            if str(echoed) != str(source_id):
                errors.append(f"{r.echo_id_field}: echoed {str(echoed)[:60]!r} but the record is {source_id!r}")
        for rule in getattr(r, "spans", ()):
            errors.extend(span_errors(output.get(rule.field), (source or {}).get(rule.source_field), rule))
        return Verdict(output, list(dict.fromkeys(errors)))


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
            errors.append(f"{rule.field}[{i}]: span {start}-{end} is outside the {len(text)} characters of "
                          f"{rule.source_field}")
        elif "text" in span and text[start:end] != span["text"]:
            errors.append(f"{rule.field}[{i}]: span {start}-{end} reads {text[start:end][:40]!r}, not "
                          f"{str(span['text'])[:40]!r}")
    return errors


def _html_fields(value: Any, path: str = "") -> list[str]:
    if isinstance(value, str):
        return [path or "<root>"] if _HTML.search(value) else []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _html_fields(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _html_fields(v, f"{path}[{i}]")]
    return []


def contains_html(text: str) -> bool:
    return bool(_HTML.search(text))
