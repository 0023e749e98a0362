"""The Airflow UI in a real browser (Playwright driving Debian's ``chromium``; no browser
download), on the deployment test's stack: log in, open the DAG, trigger a run from the Trigger
form with a param, open the Review queue from the navigation, approve one record, edit another
(a schema-invalid edit is refused with the message shown, then a valid one approved), reject a
third; the ledger says what the reviewer did, under the login's name.

Screenshots go to ``$BATCH_AI_SCREENSHOTS`` (``BATCH_AI_SCREENSHOTS=docs make test`` refreshes
the README's pictures), else to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from batch_ai import stack as stacking
from batch_ai.ledger import tables as t
from sample_data.tickets import write_day
from stacked import DAG, Api, required_binary

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("stack")]

#: tickets the emulator can place in no category: the workload's review rule sends them to a person
UNPLACED = [f"T-9{n:05d}" for n in (1, 2, 3)]


@pytest.fixture
def browser():
    chromium = required_binary("chromium", "chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def write_the_day(data: Path, day: str) -> None:
    path = write_day(data, day, count=30, first_id=300_000)
    with open(path, "a", encoding="utf-8") as fh:
        for n, ticket in enumerate(UNPLACED):
            row = {
                "ticket_id": ticket,
                "subject": "Question",
                "body": "Hello, a question about your office hours.",
                "customer_id": "C-1000",
                "channel": "web",
                "language_hint": "en",
                "closed_at": f"{day}T10:0{n}:00Z",
            }
            fh.write(json.dumps(row) + "\n")


def test_a_person_triggers_a_run_and_works_the_review_queue_in_the_airflow_ui(deployment, browser, tmp_path):
    stack, state = deployment
    shots = Path(os.environ.get("BATCH_AI_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    httpx.put(f"{state['emulator']}/_emulator/faults", json={"openai": {}}).raise_for_status()
    day = (datetime.now(UTC).date() - timedelta(days=9)).isoformat()  # a day no other test reads
    write_the_day(Path(state["env"]["BATCH_AI_DATA_DIR"]), day)
    api = Api(state["api"], stack)
    before = {r["dag_run_id"] for r in api.runs()}

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(f"{state['api']}/dags/{DAG}")
    page.get_by_label("Username").fill(stacking.ADMIN)
    page.get_by_label("Password").fill(stacking.password(stack.dir))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/dags/{DAG}")

    # the Trigger form, its logical date left at now, one param set: the day to read
    page.get_by_role("button", name="Trigger Dag").click()
    form = page.get_by_role("dialog")
    form.get_by_role("group").filter(has_text="Backfill: first day").locator("input").fill(day)
    form.screenshot(path=str(shots / "trigger-form.png"))
    form.get_by_role("button", name="Trigger", exact=True).click()
    form.wait_for(state="hidden")
    new = [r for r in api.runs() if r["dag_run_id"] not in before]
    (run,) = [r for r in new if r["run_type"] == "manual"]
    assert run["conf"]["date_from"] == day, run["conf"]
    api.wait(run["dag_run_id"])

    # the Review queue, from the navigation: the plugin's page inside the UI
    page.get_by_role("link", name="Review", exact=True).first.click()
    page.wait_for_url("**/plugin/batch-ai-review**")
    queue = page.frame_locator("iframe")

    def card(ticket: str):
        return queue.locator("section.card").filter(has_text=ticket)

    for ticket in UNPLACED:
        card(ticket).wait_for()
    assert "as admin" in card(UNPLACED[0]).inner_text()
    page.screenshot(path=str(shots / "review-queue.png"))

    approve, edit, reject = (card(ticket) for ticket in UNPLACED)
    approve.get_by_placeholder("note").fill("checked against the ticket")
    approve.get_by_role("button", name="Approve", exact=True).click()
    queue.locator("p.done").filter(has_text=UNPLACED[0]).wait_for()

    edit.locator("summary", has_text="Edit the output").click()
    output = json.loads(edit.locator("textarea").input_value())
    edit.locator("textarea").fill(json.dumps({**output, "category": "hours"}))
    edit.get_by_role("button", name="Save edit & approve").click()
    refused = queue.locator("p.error")
    refused.wait_for()
    assert "the edited output is not valid" in refused.inner_text() and "category" in refused.inner_text()
    page.screenshot(path=str(shots / "review-edit-refused.png"))
    edit.locator("summary", has_text="Edit the output").click()
    edit.locator("textarea").fill(json.dumps({**output, "category": "feedback", "summary": "Asks for office hours."}))
    edit.get_by_role("button", name="Save edit & approve").click()
    queue.locator("p.done").filter(has_text=UNPLACED[1]).wait_for()

    reject.get_by_role("button", name="Reject", exact=True).click()
    queue.locator("p.done").filter(has_text=UNPLACED[2]).wait_for()

    decided = ledger_view(state["db"], UNPLACED)
    assert decided[UNPLACED[0]][:2] == ("completed", "reviewer:admin")
    assert decided[UNPLACED[1]][:2] == ("completed", "reviewer:admin")
    assert decided[UNPLACED[1]][2]["category"] == "feedback"
    assert decided[UNPLACED[1]][2]["summary"] == "Asks for office hours."
    assert decided[UNPLACED[2]][:2] == ("rejected", "reviewer:admin")


def ledger_view(url: str, tickets: list[str]) -> dict[str, tuple]:
    """Per ticket: (state, who made the last change, output)."""
    r, a = t.records.c, t.audit.c
    engine = sa.create_engine(url)
    view = {}
    with engine.connect() as conn:
        for rec in conn.execute(sa.select(r.id, r.source_id, r.state, r.output).where(r.source_id.in_(tickets))):
            actor = conn.scalar(sa.select(a.actor).where(a.record_id == rec.id).order_by(a.id.desc()).limit(1))
            view[rec.source_id] = (rec.state, actor, rec.output)
    engine.dispose()
    return view
