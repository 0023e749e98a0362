"""The review page: a FastAPI app the Airflow API server mounts at ``/batch-ai`` (see the plugin
in ``plugins/batch_ai_review.py``), shown in the Airflow UI under "Review" in its navigation.

Every route but the navigation icon needs an Airflow login (the ``_token`` cookie the UI sets,
or a Bearer token); the reviewer recorded in the audit is the logged-in user. Where the API
server runs with the simple auth manager's "everyone is admin" switch there are no names, so
the page asks for one.
Decisions go through :func:`batch_ai.review.decide`, as the CLI's do.
"""

from __future__ import annotations

import functools
import html
import json
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Body, Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from batch_ai import review
from batch_ai.ledger.store import Ledger

PREFIX = "/batch-ai"
ANONYMOUS = "Anonymous"  # the simple auth manager's user when everyone is admin

app = FastAPI(title="batch-ai review queue", docs_url=None, redoc_url=None, openapi_url=None)


@functools.cache
def ledger() -> Ledger:
    return Ledger.connect()


async def user(request: Request):
    """The logged-in Airflow user (401 without a login, as the Airflow API itself)."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPAuthorizationCredentials

    header = request.headers.get("authorization", "")
    creds = (
        HTTPAuthorizationCredentials(scheme="Bearer", credentials=header[7:])
        if header.lower().startswith("bearer ")
        else None
    )
    return await get_user(request, _oauth_token=None, bearer_credentials=creds)


User = Annotated[Any, Depends(user)]


def may_decide(u, record_id: int) -> bool:
    """Decisions change what a workload publishes: they need the right to edit that workload's
    DAG (a viewer may look, not decide), as the auth manager says."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    try:
        workload = ledger().record(int(record_id)).workload
    except (KeyError, ValueError):
        return True  # decide() names the missing record
    return get_auth_manager().is_authorized_dag(method="PUT", details=DagDetails(id=workload), user=u)


def reviewer_name(u, given: str | None) -> str:
    name = u.get_name()
    if name == ANONYMOUS:  # no real login: the page asks who is deciding
        if not (given or "").strip():
            raise review.ReviewError("this Airflow has no logins (everyone is admin): type your name in 'Reviewer'")
        return f"{given.strip()} (not signed in)"
    return name


# -- JSON, for scripts ---------------------------------------------------------------------


@app.get("/api/review")
def api_queue(u: User, workload: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    return json.loads(json.dumps(review.queue(ledger(), workload, limit), default=str))


@app.get("/api/records/{record_id}")
def api_record(record_id: int, u: User) -> dict[str, Any]:
    try:
        rec = ledger().record(record_id)
    except KeyError as exc:
        raise HTTPException(404, str(exc)) from None
    return json.loads(json.dumps(review.view(ledger(), rec), default=str))


@app.post("/api/review/{record_id}")
def api_decide(record_id: int, u: User, decision: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    if not may_decide(u, record_id):
        raise HTTPException(403, f"{u.get_name()} may not make review decisions (it needs edit rights on the DAG)")
    try:
        after = review.decide(
            ledger(),
            record_id,
            str(decision.get("action")),
            reviewer_name(u, decision.get("reviewer")),
            decision.get("note"),
            decision.get("output"),
        )
    except review.ReviewError as exc:
        raise HTTPException(409 if "not waiting" in str(exc) or "meanwhile" in str(exc) else 422, str(exc)) from None
    return json.loads(json.dumps(after, default=str))


# -- the page ------------------------------------------------------------------------------


@app.post("/review/{record_id}", response_class=RedirectResponse)
def decide_form(
    record_id: int,
    u: User,
    action: Annotated[str, Form()],
    note: Annotated[str, Form()] = "",
    output: Annotated[str, Form()] = "",
    reviewer: Annotated[str, Form()] = "",
    workload: Annotated[str, Form()] = "",
):
    back = {"workload": workload} if workload else {}
    try:
        if not may_decide(u, record_id):
            raise review.ReviewError(f"{u.get_name()} may not make review decisions (it needs edit rights on the DAG)")
        edited = None
        if action == "edit":
            try:
                edited = json.loads(output)
            except json.JSONDecodeError as exc:
                raise review.ReviewError(f"record {record_id}: the edited output is not JSON ({exc})") from None
        after = review.decide(ledger(), record_id, action, reviewer_name(u, reviewer), note, edited)
        back["done"] = f"record {after['id']} ({after['source_id']}): {after['history'][-1]['reason']}"
    except review.ReviewError as exc:
        back["error"] = str(exc)
        back["name"] = reviewer
    return RedirectResponse(f"{PREFIX}/review?{urlencode(back)}", status_code=303)


#: the navigation's icon: a tray with a check mark (records waiting for a person's decision)
ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" '
    'stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M3 13h5l2 3h4l2-3h5"/>'
    '<path d="M5 13V6a2 2 0 0 1 2-2h10a2 2 0 0 1 2 2v7"/><path d="M3 13v5a2 2 0 0 0 2 2h14a2 2 0 0 0 2-2v-5"/>'
    '<path d="m9 9 2 2 4-4"/></svg>'
)


@app.get("/icon.svg")
def icon() -> Response:
    """The Review queue's icon in the Airflow UI's navigation (public: it shows no data)."""
    return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


@app.get("/review", response_class=HTMLResponse)
def page(
    u: User, workload: str | None = None, done: str | None = None, error: str | None = None, name: str = ""
) -> str:
    led = ledger()
    counts = led.review_counts()
    items = review.queue(led, workload or None, 100)
    anonymous = u.get_name() == ANONYMOUS
    e = html.escape
    tabs = " ".join(
        f'<a class="tab{" on" if (workload or "") == tab else ""}" href="{PREFIX}/review{"?workload=" + quote(tab) if tab else ""}">'
        f"{e(tab or 'all')} <b>{n}</b></a>"
        for tab, n in [("", sum(counts.values())), *counts.items()]
    )
    notice = (f'<p class="done">{e(done)}</p>' if done else "") + (f'<p class="error">{e(error)}</p>' if error else "")
    who = (
        f'<label>Reviewer <input name="reviewer" required value="{e(name)}" placeholder="your name"></label>'
        if anonymous
        else f"<span class=who>as <b>{e(u.get_name())}</b></span>"
    )
    cards = "\n".join(_card(it, who, workload or "") for it in items) or "<p class=empty>Nothing waits for review.</p>"
    return _PAGE.format(tabs=tabs, notice=notice, cards=cards, prefix=PREFIX)


def _pretty(value: Any) -> str:
    return html.escape(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _card(it: dict[str, Any], who: str, workload: str) -> str:
    e = html.escape
    problems = "".join(f"<li>{e(str(v))}</li>" for v in it["validation_errors"])
    history = "".join(
        f"<tr><td>{e(h['at'] or '')}</td><td>{e(h['from'] or 'new')} → {e(h['to'])}</td><td>{e(h['by'])}</td>"
        f"<td>{e(str(h['attempt']))}</td><td>{e(h['job'] or '')}</td><td>{e(h['request_id'] or '')}</td>"
        f"<td>{e(h['reason'] or '')}</td></tr>"
        for h in it["history"]
    )
    editable = _pretty(it["output"] if it["output"] is not None else {})
    return f"""
<section class="card" id="r{it["id"]}">
  <h2>#{it["id"]} <span>{e(it["workload"])}</span> {e(it["source_id"])}
      <small>prompt {e(it["prompt_version"])} · schema {e(it["schema_version"])} · {e(it["model"])} · attempts {it["attempts"]}</small></h2>
  <p class="why">{e(it["reason"] or "")}</p>
  {f'<ul class="problems">{problems}</ul>' if problems else ""}
  <div class="cols">
    <div><h3>Input</h3><pre>{_pretty(it["input"])}</pre></div>
    <div><h3>Output</h3><pre>{_pretty(it["output"]) if it["output"] is not None else "<i>none</i>"}</pre></div>
  </div>
  <details><summary>History ({len(it["history"])})</summary>
    <table><tr><th>at</th><th>change</th><th>by</th><th>attempt</th><th>job</th><th>request</th><th>reason</th></tr>{history}</table></details>
  <form method="post" action="{PREFIX}/review/{it["id"]}">
    <input type="hidden" name="workload" value="{e(workload)}">
    <details class="edit"><summary>Edit the output</summary><textarea name="output" rows="10">{editable}</textarea></details>
    <div class="actions">{who}
      <input name="note" placeholder="note (kept in the audit)">
      <button name="action" value="approve" class="approve">Approve</button>
      <button name="action" value="edit" class="edit">Save edit &amp; approve</button>
      <button name="action" value="reject" class="reject">Reject</button>
      <button name="action" value="requeue">Send back</button>
    </div>
  </form>
</section>"""


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>batch-ai review queue</title>
<style>
 body {{ font: 14px/1.45 system-ui, sans-serif; margin: 0; padding: 16px 24px; color: #1f2933; background: #f7f8fa; }}
 h1 {{ font-size: 20px; margin: 0 0 4px; }} .sub {{ color: #616e7c; margin: 0 0 12px; }}
 .tab {{ display: inline-block; padding: 4px 10px; margin: 0 4px 8px 0; border-radius: 14px; background: #e4e7eb;
        color: #1f2933; text-decoration: none; }} .tab.on {{ background: #017cee; color: white; }}
 .card {{ background: white; border: 1px solid #d9dee4; border-radius: 8px; padding: 12px 16px; margin: 12px 0; }}
 .card h2 {{ font-size: 15px; margin: 0; }} .card h2 span {{ color: #017cee; }} .card h2 small {{ color: #7b8794; font-weight: normal; margin-left: 8px; }}
 .why {{ margin: 6px 0; color: #8d2b0b; }} .problems {{ color: #ab091e; margin: 4px 0; }}
 .cols {{ display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }} h3 {{ font-size: 12px; text-transform: uppercase; color: #7b8794; margin: 8px 0 4px; }}
 pre {{ background: #f5f7fa; border: 1px solid #e4e7eb; border-radius: 4px; padding: 8px; max-height: 220px; overflow: auto;
       white-space: pre-wrap; word-break: break-word; margin: 0; font-size: 12px; }}
 table {{ border-collapse: collapse; font-size: 12px; width: 100%; }} td, th {{ border-bottom: 1px solid #eee; padding: 3px 6px; text-align: left; vertical-align: top; }}
 textarea {{ width: 100%; font: 12px monospace; }} details {{ margin: 6px 0; }}
 .actions {{ display: flex; gap: 8px; align-items: center; flex-wrap: wrap; margin-top: 6px; }} .actions input[name=note] {{ flex: 1; min-width: 200px; }}
 button {{ border: 1px solid #cbd2d9; background: white; border-radius: 4px; padding: 5px 12px; cursor: pointer; }}
 .approve {{ background: #0f8a3c; color: white; border-color: #0f8a3c; }} .reject {{ background: #c4122f; color: white; border-color: #c4122f; }}
 .edit {{ background: #f3f8ff; }} .done {{ background: #e3f9e5; padding: 8px; border-radius: 4px; }}
 .error {{ background: #ffe3e3; padding: 8px; border-radius: 4px; }} .empty {{ color: #7b8794; }}
</style></head>
<body>
<h1>Review queue</h1>
<p class="sub">Records that wait for a person: review rules, refusals, spot checks and records out of attempts.
Approved and edited records are published by the next run's publish step; rejected ones never are.
Every decision is kept in the audit under your name.</p>
<nav>{tabs}</nav>
{notice}
{cards}
</body></html>
"""
