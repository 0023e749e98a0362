"""One bad row never stops a night: every hostile row is that row's dead letter, naming the file,
line and field, and every other row of the file is taken."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml
from sqlalchemy import select

from batch_ai import include_dir
from batch_ai.ledger import tables as t
from batch_ai.providers.base import jsonl_line
from batch_ai.stages import intake
from batch_ai.stages.run import RunInfo
from batch_ai.workloads import WorkloadError, load_workload, load_workload_file

DAY = "2026-11-25"
NAME = f"closed_{DAY}.jsonl"


def good(n: int, **more) -> dict:
    return {"ticket_id": f"T-{n}", "subject": f"Ticket {n}", "body": "I was charged twice, please refund.", **more}


def line(row) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode()


#: (raw line, the reason its dead letter must give, or None for a row that must be taken)
HOSTILE: list[tuple[bytes, str | None]] = [
    (line(good(1)), None),
    (b'{"ticket_id": "T-2",\r "subject": "s",\r "body": "b"}', None),  # raw CRs between JSON tokens: one row
    (line(good(3, body="first line\u2028second line\u2029end")), None),  # raw U+2028/U+2029 inside a string
    (
        b'{"ticket_id": "T-4", "subject": "s", "body": "lone \\ud800 surrogate"}',
        "field 'body' holds a lone surrogate (U+D800)",
    ),
    (b'{"ticket_id": "T-\\udc00", "subject": "s", "body": "b"}', "field 'ticket_id' holds a lone surrogate (U+DC00)"),
    (b'{"ticket_id": "T-5", "subject": "s", "body": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested"),
    (line(good(6, body=["x" * 1000] * 400)), "field 'body' must be a string, got list"),
    (line(good(7, notes="y" * 400_000)), "the row is 400"),  # an undeclared field: the whole row counts
    (b'{"ticket_id": "T-8\xff", "subject": "s", "body": "b"}', "not valid UTF-8: byte 0xff at offset 18 of the line"),
    (b'{"ticket_id": "T-8\xfe", "subject": "s", "body": "b"}', "not valid UTF-8: byte 0xfe at offset 18 of the line"),
    (line(good(9, body={})), "field 'body' must be a string, got object"),
    (line(good(10, body=[])), "field 'body' must be a string, got list"),
    (line(good(11, body=False)), "field 'body' must be a string, got boolean"),
    (b'{"ticket_id": "T-12", "subject": "s", "body": NaN}', "NaN is not a JSON number"),
    (b'{"ticket_id": "T-13", "subject": "s", "body": 1e999}', "holds inf"),
    (line(good(14, body="nul \x00 here")), "field 'body' holds a NUL character"),
    (line({**good(15), "ticket_id": "<b>T-15</b>"}), "ticket_id '<b>T-15</b>' contains HTML"),
    (line({**good(16), "ticket_id": "TICKET-16"}), "ticket_id does not look like one (id_pattern T-[0-9]+)"),
    (line(good(17, subject="   ")), "required field 'subject' is missing or empty"),
]


@pytest.fixture
def hostile_day(tmp_path, monkeypatch):
    data = tmp_path / "data"
    path = data / "tickets" / NAME
    path.parent.mkdir(parents=True)
    body = b"\r\n".join(raw for raw, _ in HOSTILE) + b"\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + body)  # a byte-order mark, and CRLF line ends
    monkeypatch.setenv("BATCH_AI_DATA_DIR", str(data))
    load_workload.cache_clear()
    yield load_workload("ticket_summaries")
    load_workload.cache_clear()


def test_a_hostile_day_is_taken_row_by_row(hostile_day, ledger):
    run = RunInfo(run_id="hostile", ds=DAY)
    summary = intake.extract(hostile_day, ledger, run)
    assert summary["rows"] == len(HOSTILE)  # the CR and U+2028 did not cut a row in two
    with ledger.engine.connect() as conn:
        records = {r.source_id: r for r in conn.execute(select(t.records))}
        intake_rows = {r.row_number: r for r in conn.execute(select(t.intake))}
    for number, (_, reason) in enumerate(HOSTILE, start=1):
        record = next(r for r in records.values() if r.id == intake_rows[number].record_id)
        if reason is None:
            assert record.state == "queued", (number, record.error_message)
        else:
            assert record.state == "dead_letter", (number, reason)
            assert record.error_message.startswith(f"{NAME} line {number}"), record.error_message
            assert reason in record.error_message, (reason, record.error_message)
    # the byte-order mark did not cost the first row its id; U+2028 is kept as it came
    assert records["T-1"].state == "queued"
    assert records["T-3"].input["body"] == "first line\u2028second line\u2029end"
    # two ids that differ only by an invalid byte are two dead letters, not one record
    assert len({intake_rows[9].record_id, intake_rows[10].record_id}) == 2
    accounting = ledger.run_accounting("ticket_summaries", "hostile")
    assert accounting["lost"] == 0 and accounting["states"]["queued"] == 3


def test_request_files_carry_no_line_separator_but_newline():
    request = {"custom_id": "r1-a1", "body": {"text": "a\u2028b\u2029c\rd\ne"}}
    data = jsonl_line(request)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert "\u2028".encode() not in data and "\u2029".encode() not in data and b"\r" not in data
    assert json.loads(data) == request


@pytest.fixture
def include_copy(tmp_path, monkeypatch):
    copy = tmp_path / "include"
    shutil.copytree(
        include_dir(), copy, ignore=shutil.ignore_patterns("provider_emulator", "sample_data", "__pycache__")
    )
    monkeypatch.setenv("BATCH_AI_INCLUDE_DIR", str(copy))
    return copy


def test_a_template_naming_an_undeclared_field_fails_at_parse_naming_file_and_field(include_copy):
    prompt = include_copy / "prompts" / "ticket_summary" / "v1.yaml"
    prompt.write_text(prompt.read_text().replace("{{ record.subject }}", "{{ record.titel }}"))
    with pytest.raises(WorkloadError) as err:
        load_workload_file(include_copy / "workloads" / "ticket_summaries.yaml")
    message = str(err.value)
    assert str(prompt) in message and "record.titel" in message and "not a source field" in message


def test_a_template_failing_on_a_typical_row_fails_at_parse(include_copy):
    prompt = include_copy / "prompts" / "ticket_summary" / "v1.yaml"
    prompt.write_text(prompt.read_text().replace("{{ record.body }}", "{{ record.body + 1 }}"))
    with pytest.raises(WorkloadError, match=re.escape(str(prompt)) + ".*fails on a typical row"):
        load_workload_file(include_copy / "workloads" / "ticket_summaries.yaml")


def test_declared_fields_a_row_lacks_render_empty(include_copy):
    spec = yaml.safe_load((include_copy / "workloads" / "ticket_summaries.yaml").read_text())
    assert "channel" in spec["source"]["fields"]
    w = load_workload_file(include_copy / "workloads" / "ticket_summaries.yaml")
    system, user = w.render({"ticket_id": "T-1", "subject": "s", "body": "b"})  # no customer_id, channel...
    assert "T-1" in user and "None" not in user
