"""The ledger on SQLite and PostgreSQL: transitions, audit, intake accounting, bulk writes."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select

from batch_ai.ledger import tables as t
from batch_ai.ledger.states import ALLOWED, IllegalTransition, State, check_transitions
from batch_ai.ledger.store import Change, IntakeRow, RecordKey

KEY = RecordKey("tickets", "v1", "gpt-4o-mini", "v1")


def rows(*ids, malformed=()):
    return [
        IntakeRow(
            n, sid, {"ticket_id": sid, "body": f"text {sid}"}, f"hash-{sid}", "bad row" if sid in malformed else None
        )
        for n, sid in enumerate(ids, start=1)
    ]


def record_ids(ledger, state=None):
    q = select(t.records.c.source_id, t.records.c.id)
    if state:
        q = q.where(t.records.c.state == state)
    with ledger.engine.connect() as conn:
        return dict(conn.execute(q).all())


def states(ledger):
    with ledger.engine.connect() as conn:
        return dict(conn.execute(select(t.records.c.source_id, t.records.c.state)).all())


def test_every_state_is_in_the_transition_table():
    assert set(ALLOWED) == {None, *State}


def test_check_transitions_names_every_offender():
    with pytest.raises(IllegalTransition) as err:
        check_transitions([(1, "queued", "published"), (2, "queued", "submitted"), (3, None, "completed")])
    assert "record 1: queued -> published" in str(err.value)
    assert "record 3: new -> completed" in str(err.value)
    assert "record 2" not in str(err.value)


def test_intake_accounts_for_every_row(ledger):
    data = rows("A", "B", "C", "B", "D", malformed={"D"})
    ledger.start_run("tickets", "run1")
    ledger.set_extracted("tickets", "run1", len(data))
    outcome = ledger.intake(KEY, "openai", "run1", data, actor="test")
    assert outcome["new"] == 4 and outcome["duplicate"] == 1 and outcome["dead_letter"] == 1
    assert states(ledger) == {"A": "queued", "B": "queued", "C": "queued", "D": "dead_letter"}
    acc = ledger.run_accounting("tickets", "run1")
    assert acc["extracted"] == 5 and acc["lost"] == 0
    assert acc["states"]["queued"] == 3 and acc["states"]["dead_letter"] == 1 and acc["states"]["duplicate"] == 1
    # the audit has the first transition of each record
    with ledger.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(t.audit)) == 4


def test_a_row_repeated_in_a_later_chunk_takes_the_record_over(ledger, monkeypatch):
    """The intake streams chunks; an id repeated across them ends as within one: one record with
    the last row's content, and one intake row per row read (the earlier one the duplicate)."""
    monkeypatch.setattr("batch_ai.ledger.intake.STEP", 2)
    data = rows("A", "B", "C", "A", "B", "D")
    data[4].content_hash, data[4].data = "hash-B-2", {"ticket_id": "B", "body": "edited"}
    ledger.start_run("tickets", "run1")
    ledger.set_extracted("tickets", "run1", len(data))
    outcome = ledger.intake(KEY, "openai", "run1", data, actor="test")
    assert outcome["new"] == 4 and outcome["duplicate"] == 2 and outcome["requeued"] == 1
    assert states(ledger) == {"A": "queued", "B": "queued", "C": "queued", "D": "queued"}
    assert ledger.record(record_ids(ledger)["B"]).input == {"ticket_id": "B", "body": "edited"}
    with ledger.engine.connect() as conn:
        ic = t.intake.c
        got = dict(conn.execute(select(ic.row_number, ic.disposition).order_by(ic.row_number)).all())
    assert got == {1: "duplicate", 2: "duplicate", 3: "record", 4: "record", 5: "record", 6: "record"}
    acc = ledger.run_accounting("tickets", "run1")
    assert acc["lost"] == 0 and acc["states"]["duplicate"] == 2 and acc["states"]["queued"] == 4


def test_lost_counts_rows_that_reached_no_state(ledger):
    ledger.start_run("tickets", "run1")
    ledger.set_extracted("tickets", "run1", 3)  # the reader saw three rows ...
    ledger.intake(KEY, "openai", "run1", rows("A", "B"), actor="test")  # ... two were accounted for
    assert ledger.run_accounting("tickets", "run1")["lost"] == 1


def test_same_key_same_content_is_unchanged_and_changed_content_requeues(ledger):
    ledger.intake(KEY, "openai", "run1", rows("A", "B"), actor="test")
    ids = record_ids(ledger)
    ledger.transition([Change(ids["A"], State.SUBMITTED), Change(ids["B"], State.SUBMITTED)], actor="test")
    ledger.transition([Change(ids["A"], State.COMPLETED), Change(ids["B"], State.COMPLETED)], actor="test")
    ledger.transition([Change(ids["A"], State.PUBLISHED), Change(ids["B"], State.PUBLISHED)], actor="test")

    again = ledger.intake(KEY, "openai", "run2", rows("A", "B"), actor="test")
    assert again["unchanged"] == 2 and again["new"] == 0
    assert set(states(ledger).values()) == {"published"}

    changed = rows("A", "B")
    changed[0].content_hash, changed[0].data = "hash-A-2", {"ticket_id": "A", "body": "edited"}
    outcome = ledger.intake(KEY, "openai", "run3", changed, actor="test")
    assert outcome["requeued"] == 1 and outcome["unchanged"] == 1
    assert states(ledger) == {"A": "queued", "B": "published"}
    history = ledger.history(ids["A"])
    assert [(h.from_state, h.to_state) for h in history] == [
        (None, "queued"),
        ("queued", "submitted"),
        ("submitted", "completed"),
        ("completed", "published"),
        ("published", "queued"),
    ]
    assert history[-1].reason == "source content changed" and history[-1].run_id == "run3"


def test_a_new_model_version_is_a_new_record(ledger):
    ledger.intake(KEY, "openai", "run1", rows("A"), actor="test")
    ledger.intake(RecordKey("tickets", "v2", "gpt-4o-mini", "v1"), "openai", "run2", rows("A"), actor="test")
    with ledger.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(t.records)) == 2


def test_illegal_transition_raises_and_changes_nothing(ledger):
    ledger.intake(KEY, "openai", "run1", rows("A", "B"), actor="test")
    ids = record_ids(ledger)
    with pytest.raises(IllegalTransition, match=f"record {ids['B']}: queued -> published"):
        ledger.transition([Change(ids["A"], State.SUBMITTED), Change(ids["B"], State.PUBLISHED)], actor="test")
    assert states(ledger) == {"A": "queued", "B": "queued"}  # the legal half was not applied either
    with pytest.raises(IllegalTransition):
        ledger.transition([Change(ids["A"], State.QUEUED)], actor="test")  # queued -> queued is no transition


def test_dead_letters_never_move(ledger):
    ledger.intake(KEY, "openai", "run1", rows("D", malformed={"D"}), actor="test")
    rid = record_ids(ledger)["D"]
    for target in State:
        with pytest.raises(IllegalTransition):
            ledger.transition([Change(rid, target)], actor="test")


def test_transitions_are_bulk_statements(ledger):
    n = 1500
    ledger.intake(KEY, "openai", "run1", rows(*[f"T{i}" for i in range(n)]), actor="test")
    ids = list(record_ids(ledger).values())
    statements = []

    @event.listens_for(ledger.engine, "before_cursor_execute")
    def count(conn, cursor, statement, params, context, executemany):
        statements.append(statement)

    ledger.transition([Change(i, State.SUBMITTED, values={"attempts": 1}) for i in ids], actor="test")
    event.remove(ledger.engine, "before_cursor_execute", count)
    # select, update and audit insert per chunk of 1000 (plus transaction chatter): not one per record
    assert len(statements) < 20, statements[:30]
    assert set(states(ledger).values()) == {"submitted"}
    with ledger.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(t.audit).where(t.audit.c.to_state == "submitted")) == n


def test_changing_a_record_twice_in_one_operation_is_refused(ledger):
    ledger.intake(KEY, "openai", "run1", rows("A"), actor="test")
    rid = record_ids(ledger)["A"]
    with pytest.raises(ValueError, match="changed twice"):
        ledger.transition([Change(rid, State.SUBMITTED), Change(rid, State.SUBMITTED)], actor="test")


def test_attempts_count_per_content(ledger):
    """A later day's new content for the same source id starts its attempts afresh; the same
    content keeps them (issue 13: one HTTP 500 sent a record to review after it had changed)."""
    ledger.intake(KEY, "openai", "run1", rows("A", "B", "C"), actor="test")
    ids = record_ids(ledger)
    failed = [Change(ids[s], State.PROVIDER_ERROR, values={"attempts": 2}) for s in ("A", "B")]
    ledger.transition([Change(ids[s], State.SUBMITTED) for s in ("A", "B")], actor="test")
    ledger.transition(failed, actor="test")
    ledger.transition([Change(ids["B"], State.QUEUED)], actor="test")  # B waits for its retry, still queued
    ledger.transition([Change(ids["C"], State.SUBMITTED, values={"attempts": 1})], actor="test")

    changed = rows("A", "B", "C")
    for row in changed:
        row.content_hash, row.data = f"{row.content_hash}-2", {"ticket_id": row.source_id, "body": "edited"}
    ledger.intake(KEY, "openai", "run2", changed, actor="test")
    with ledger.engine.connect() as conn:
        attempts = dict(conn.execute(select(t.records.c.source_id, t.records.c.attempts)).all())
    assert attempts == {"A": 0, "B": 0, "C": 1}  # C's job in flight answers for the old content
    assert states(ledger) == {"A": "queued", "B": "queued", "C": "submitted"}
    assert ledger.history(ids["A"])[-1].attempt == 0


def test_pick_records_reads_the_chosen_positions_only(ledger):
    ledger.intake(KEY, "openai", "run1", rows(*"ABCDEFGHIJ"), actor="test")
    seen = []
    count, picked = ledger.pick_records(KEY, State.QUEUED, lambda n: seen.append(n) or [7, 2])
    assert count == 10 and seen == [10]
    assert [r.source_id for r in picked] == ["H", "C"]  # in the chooser's order, positions in id order
    assert ledger.pick_records(KEY, State.SUBMITTED, lambda n: range(n)) == (0, [])
