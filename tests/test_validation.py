"""Output validation with the ticket_summaries rules."""

from __future__ import annotations

import json

import pytest

from batch_ai.validation.records import OutputValidator
from batch_ai.workloads import load_workload


@pytest.fixture(scope="module")
def validator():
    w = load_workload("ticket_summaries")
    return OutputValidator(w.output_schema, w.spec.validation)


GOOD = {
    "ticket_id": "T-1",
    "summary": "The customer was charged twice and asked for a refund.",
    "category": "billing",
    "sentiment": "negative",
    "language": "en",
    "action_items": ["Refund the second charge"],
}


def check(validator, **changes):
    out = {**GOOD, **changes}
    return validator.validate(json.dumps(out), "T-1")


def test_valid_output_passes(validator):
    verdict = check(validator)
    assert verdict.ok and verdict.output == GOOD


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"ticket_id": "T-1", "summ', "output is not JSON"),
        ("", "empty output"),
        ("[1, 2]", "JSON list, not an object"),
    ],
)
def test_unparseable_outputs(validator, text, message):
    verdict = validator.validate(text, "T-1")
    assert not verdict.ok and message in verdict.errors[0]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"category": "unsure"}, "category: 'unsure' is not one of"),
        ({"summary": "x" * 401}, "summary: 401 characters, over the limit of 400"),
        ({"summary": ""}, "summary: required and missing or empty"),
        ({"ticket_id": "T-2"}, "ticket_id: echoed 'T-2' but the record is 'T-1'"),
        ({"summary": "Fine.<script>alert(1)</script>"}, "summary: contains HTML"),
        ({"summary": "See <a href='x'>here</a>"}, "summary: contains HTML"),
        ({"summary": "Click javascript:alert(1)"}, "summary: contains a javascript: URL"),
        ({"summary": "Encoded &lt;script&gt; tag"}, "summary: contains HTML once its character references are decoded"),
        ({"action_items": ["ok", "<b>bold</b>"]}, "action_items[1]: contains HTML"),
        ({"language": "english"}, "schema: language"),
        ({"extra": 1}, "schema: <root>: Additional properties"),
    ],
)
def test_rule_violations_are_named(validator, changes, message):
    verdict = check(validator, **changes)
    assert not verdict.ok
    assert any(message in e for e in verdict.errors), verdict.errors


def test_missing_field_is_reported(validator):
    out = dict(GOOD)
    del out["sentiment"]
    verdict = validator.validate(json.dumps(out), "T-1")
    assert any("sentiment" in e for e in verdict.errors)


def test_text_that_merely_mentions_comparisons_is_not_html(validator):
    assert check(validator, summary="Orders < 5 items and totals > 10 EUR were affected.").ok


TEXT = "Please call me on +44 20 7946 0958 or write to jo@example.com about the refund."


def compliance_output(*redactions):
    return json.dumps(
        {
            "item_id": "C-1",
            "violations": [],
            "redactions": list(redactions),
            "exception_label": "none",
            "flagged": bool(redactions),
        }
    )


def test_a_redaction_span_outside_the_text_is_rejected():
    w = load_workload("compliance_review")
    v = OutputValidator(w.output_schema, w.spec.validation)
    source = {"item_id": "C-1", "text": TEXT}
    phone = {"start": 18, "end": 34, "text": "+44 20 7946 0958", "kind": "phone"}
    assert TEXT[18:34] == phone["text"] and v.validate(compliance_output(phone), "C-1", source).ok
    outside = {"start": 70, "end": 120, "text": "x", "kind": "other"}
    verdict = v.validate(compliance_output(phone, outside), "C-1", source)
    assert verdict.errors == [f"redactions[1]: span 70-120 is outside the {len(TEXT)} characters of text"]
    shifted = {**phone, "start": 17, "end": 33}
    assert v.validate(compliance_output(shifted), "C-1", source).errors == [
        "redactions[0]: span 17-33 reads ' +44 20 7946 095', not '+44 20 7946 0958'"
    ]
    backwards = {**phone, "start": 34, "end": 18}
    assert "is outside" in v.validate(compliance_output(backwards), "C-1", source).errors[0]
