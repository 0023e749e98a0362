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
        ({"summary": "Fine.<script>alert(1)</script>"}, "summary: contains HTML or script"),
        ({"summary": "See <a href='x'>here</a>"}, "summary: contains HTML or script"),
        ({"summary": "Click javascript:alert(1)"}, "summary: contains HTML or script"),
        ({"summary": "Encoded &lt;script&gt; tag"}, "summary: contains HTML or script"),
        ({"action_items": ["ok", "<b>bold</b>"]}, "action_items[1]: contains HTML or script"),
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
