"""The review queue end to end: a DAG run fills it, reviewers work it through the page the
Airflow API server serves (plain HTTP against a running ``airflow api-server``) and through
the CLI, and the next run publishes exactly what they approved or edited."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from urllib.parse import unquote

import httpx
import pytest
from sqlalchemy import select, text

from batch_ai.ledger import tables as t
from batch_ai.localenv import REPO, airflow_bin, free_port
from sample_data.tickets import write_day
from test_e2e_ticket_summaries import DAY, Run

pytestmark = pytest.mark.e2e

USERS = {"alice": "alice-secret", "victor": "victor-secret"}


class ApiServer:
    """``airflow api-server`` on 127.0.0.1 with our plugins, two users of the simple auth manager."""

    def __init__(self, env: dict[str, str], home):
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps(USERS))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **env,
            "AIRFLOW__API_AUTH__JWT_SECRET": "test-only-secret",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "alice:admin,victor:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API__BASE_URL": self.url,
        }
        self.log = open(home / "api-server.log", "w")
        self.proc = subprocess.Popen(
            [airflow_bin(), "api-server", "-H", "127.0.0.1", "-p", str(self.port), "-w", "1"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_until_up(home / "api-server.log")
        except BaseException:
            self.stop()
            raise

    def _wait_until_up(self, log) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/api/v2/monitor/health", timeout=2).is_success:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise AssertionError("api-server did not come up in 120s")

    def token(self, user: str) -> str:
        r = httpx.post(f"{self.url}/auth/token", json={"username": user, "password": USERS[user]}, timeout=10)
        assert r.status_code == 201, r.text
        return r.json()["access_token"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def cli(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "batch_ai", *args], env=env, capture_output=True, text=True, cwd=REPO)


def test_reviewers_decide_in_the_airflow_ui_and_the_cli_and_the_next_run_publishes_their_decisions(
    airflow_home, tmp_path, emulator
):
    data = tmp_path / "data"
    write_day(data, DAY, count=120)
    run = Run(airflow_home, f"sqlite:///{tmp_path / 'ledger.sqlite'}", data, emulator)
    run.with_spec(
        tmp_path / "spec",
        **{
            "review.rules": [{"field": "category", "in": ["other"], "reason": "no category"}],
            "review.sample_rate": 0.05,
            "quality_gate.max_invalid_rate": 1.0,
        },
    )
    run.emulator.set_faults({"openai": {"seed": 8, "realtime_faults": False, "refusal_rate": 0.05}})
    run.dag()
    r = t.records.c
    waiting = run.rows(
        select(r.id, r.source_id, r.output, r.error_message).where(r.state == "review_required").order_by(r.id)
    )
    reasons = {w.error_message.split(":")[0] for w in waiting}
    assert {"review rule", "refused", "random spot check (5% of valid outputs)"} <= reasons, reasons
    with_output = [w for w in waiting if w.output]
    approve, reject, edit = with_output[:3]
    refused = next(w for w in waiting if w.output is None)
    assert run.report()["review_queue"] == len(waiting)

    server = ApiServer(run.env, airflow_home)
    try:
        page = f"{server.url}/batch-ai/review"
        assert httpx.get(page, timeout=10).status_code == 401  # an Airflow login is needed
        alice = {"_token": server.token("alice")}
        # the UI lists the page in its navigation
        plugins = httpx.get(f"{server.url}/api/v2/plugins", cookies=alice, timeout=10).json()
        views = [v for p in plugins["plugins"] for v in p.get("external_views", [])]
        view = next(v for v in views if v["name"] == "Review")
        assert {"href": "/batch-ai/review", "icon": "/batch-ai/icon.svg", "destination": "nav"}.items() <= view.items()
        icon = httpx.get(f"{server.url}{view['icon']}", timeout=10)
        assert icon.headers["content-type"] == "image/svg+xml" and icon.text.startswith("<svg")

        body = httpx.get(page, cookies=alice, timeout=10).text
        assert f'id="r{approve.id}"' in body and "as <b>alice</b>" in body
        assert f'<form method="post" action="/batch-ai/review/{reject.id}">' in body

        def form(record, **fields):
            return httpx.post(f"{page}/{record.id}", data=fields, cookies=alice, timeout=10)

        done = form(approve, action="approve", note="checked against the ticket")
        assert done.status_code == 303 and "done=" in done.headers["location"]
        assert form(reject, action="reject").status_code == 303
        bad = form(edit, action="edit", output=json.dumps({**edit.output, "sentiment": "furious"}))
        assert "error=" in bad.headers["location"] and "furious" in unquote(bad.headers["location"])
        # the JSON API, as a script would use it, with a Bearer token
        fixed = {**edit.output, "summary": "Edited by a person."}
        resp = httpx.post(
            f"{server.url}/batch-ai/api/review/{edit.id}",
            json={"action": "edit", "output": fixed},
            headers={"Authorization": f"Bearer {alice['_token']}"},
            timeout=10,
        )
        assert resp.status_code == 200 and resp.json()["state"] == "completed", resp.text
        again = httpx.post(
            f"{server.url}/batch-ai/api/review/{edit.id}", json={"action": "approve"}, cookies=alice, timeout=10
        )
        assert again.status_code == 409 and "not waiting for review" in again.json()["detail"]
        # a viewer may look, not decide
        victor = {"_token": server.token("victor")}
        assert httpx.get(page, cookies=victor, timeout=10).status_code == 200
        denied = httpx.post(
            f"{server.url}/batch-ai/api/review/{refused.id}", json={"action": "reject"}, cookies=victor, timeout=10
        )
        assert denied.status_code == 403 and "needs edit rights" in denied.json()["detail"]
    finally:
        server.stop()

    states = dict(run.rows(select(r.id, r.state).where(r.id.in_([approve.id, reject.id, edit.id]))))
    assert states == {approve.id: "completed", reject.id: "rejected", edit.id: "completed"}
    by = {h.record_id: h.actor for h in run.rows(select(t.audit).where(t.audit.c.actor.like("reviewer:%")))}
    assert by == {approve.id: "reviewer:alice", reject.id: "reviewer:alice", edit.id: "reviewer:alice"}

    # the same actions from the command line
    env = {**run.env}
    listed = cli(env, "review", "list")
    assert listed.returncode == 0 and f"#{refused.id} " in listed.stdout and f"#{approve.id} " not in listed.stdout
    no_output = cli(env, "review", "approve", str(refused.id), "--reviewer", "carol")
    assert no_output.returncode == 1 and "no output to approve" in no_output.stderr
    rerun = cli(env, "review", "requeue", str(refused.id), "--reviewer", "carol", "--note", "try once more")
    assert rerun.returncode == 0 and "is now queued" in rerun.stdout, rerun.stderr
    history = cli(env, "history", approve.source_id, "--workload", "ticket_summaries")
    assert history.returncode == 0
    assert re.search(r"review_required -> completed\s+by reviewer:alice", history.stdout), history.stdout
    assert "approved by alice: checked against the ticket" in history.stdout

    # the next run publishes what was approved or edited (with the edit), never what was rejected
    run.emulator.set_faults({"openai": {}})
    run.dag()
    sink = {row.ticket_id: row for row in run.rows(text("select * from ticket_summaries"))}
    assert sink[approve.source_id].publish_status == "published"
    assert sink[edit.source_id].publish_status == "published" and sink[edit.source_id].summary == "Edited by a person."
    assert sink[reject.source_id].publish_status == "rejected" and sink[reject.source_id].summary is None
    final = dict(run.rows(select(r.id, r.state).where(r.id.in_([approve.id, reject.id, edit.id, refused.id]))))
    assert final[approve.id] == final[edit.id] == "published" and final[reject.id] == "rejected"
    assert final[refused.id] in ("published", "review_required")  # its retry went the way the model answered


def test_a_person_approves_the_publish_through_airflow_human_in_the_loop(airflow_home, tmp_path, emulator):
    """With quality_gate.human_approval, nothing is published until someone approves the
    publish in Airflow (here through the API server's human-in-the-loop endpoint)."""
    from batch_ai.localenv import dags_test_command

    data = tmp_path / "data"
    write_day(data, DAY, count=60)
    run = Run(airflow_home, f"sqlite:///{tmp_path / 'ledger.sqlite'}", data, emulator)
    run.with_spec(tmp_path / "spec", **{"quality_gate.human_approval": True})
    server = ApiServer(run.env, airflow_home)
    log = open(airflow_home / "dags-test.log", "w")
    proc = subprocess.Popen(
        dags_test_command("ticket_summaries", DAY), env=run.env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        auth = {"Authorization": f"Bearer {server.token('alice')}"}
        details_url = f"{server.url}/api/v2/dags/ticket_summaries/dagRuns/~/hitlDetails"
        deadline = time.monotonic() + 240
        waiting = []
        while not waiting and time.monotonic() < deadline:
            assert proc.poll() is None, (airflow_home / "dags-test.log").read_text()[-3000:]
            waiting = [
                d
                for d in httpx.get(details_url, headers=auth, timeout=10).json().get("hitl_details", [])
                if d.get("responded_at") is None
            ]
            time.sleep(1)
        assert waiting, "the run never asked for approval"
        (ask,) = waiting
        ti = ask["task_instance"]
        assert ti["task_id"] == "approve_publish" and ask["subject"] == "Publish ticket_summaries?"
        ready = run.scalar(text("select count(*) from batch_ai_records where state = 'completed'"))
        assert ready > 30 and f"**{ready}** record(s)" in ask["body"]
        # nothing is published while the question is open
        assert run.scalar(text("select count(*) from batch_ai_records where state = 'published'")) == 0
        answer = httpx.patch(
            f"{server.url}/api/v2/dags/ticket_summaries/dagRuns/{ti['dag_run_id']}/taskInstances/approve_publish/-1/hitlDetails",
            json={"chosen_options": ["Approve"], "params_input": {}},
            headers=auth,
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert proc.wait(timeout=180) == 0, (airflow_home / "dags-test.log").read_text()[-3000:]
        assert run.scalar(text("select count(*) from batch_ai_records where state = 'published'")) == ready
    finally:
        if proc.poll() is None:
            proc.kill()  # an unanswered approval makes `dags test` wait forever
        log.close()
        server.stop()
