"""Command line: ``python -m batch_ai {demo,report,costs,seed,review,history,ui,stack}``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from batch_ai.demo import PROVIDERS, WORKLOADS, run_demo, seed_all
from batch_ai.localenv import REPO, airflow_env, migrate


def cmd_demo(args) -> int:
    return run_demo(
        workload=args.workload,
        provider=args.provider,
        day=args.date,
        rows=args.rows,
        faults=json.loads(args.faults) if args.faults else None,
        nights=args.nights,
    )


def cmd_report(args) -> int:
    from batch_ai.ledger.store import Ledger
    from batch_ai.report import dumps, format_report

    ledger = Ledger.connect(args.ledger_url)
    report = ledger.latest_report(args.workload)
    if report is None:
        print(f"no finished run of {args.workload} in the ledger", file=sys.stderr)
        return 1
    print(dumps(report) if args.json else format_report(report))
    return 0


def cmd_costs(args) -> int:
    """The true cost of the last nights per workload, from the ledger, and a chart of it."""
    from batch_ai import costs
    from batch_ai.evaluation import report_dir

    result = costs.trend(_ledger(args), args.days, args.workload)
    if not result["rows"]:
        print(f"no finished run{' of ' + args.workload if args.workload else ''} in the ledger", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(costs.format_trend(result))
    out = Path(args.out) if args.out else report_dir() / "costs"
    path = costs.chart(result, out / f"costs_{result['first']}_{result['last']}.png")
    (out / f"{path.stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"chart: {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _demo_parser(sub) -> None:
    demo = sub.add_parser(
        "demo", help="seed data, start the emulator, run the DAG with airflow dags test, print the report"
    )
    demo.add_argument("--workload", choices=WORKLOADS, default=None, help="run only this workload (default: all six)")
    demo.add_argument(
        "--provider",
        choices=PROVIDERS,
        default=None,
        help="run every workload on this provider (default: each workload's own)",
    )
    demo.add_argument("--date", default="2026-11-25", help="the day whose closed tickets are processed")
    demo.add_argument("--rows", type=int, default=300)
    demo.add_argument("--faults", default=None, help="emulator fault configuration as JSON (default: a realistic mix)")
    demo.add_argument(
        "--nights",
        type=int,
        default=1,
        help="run ticket_summaries this many nights up to --date into one ledger, then print the costs trend",
    )
    demo.set_defaults(func=cmd_demo)


def _costs_parser(sub) -> None:
    costs = sub.add_parser("costs", help="the true cost of the last nights per workload, and a chart of it")
    costs.add_argument("--days", type=int, default=30, help="how many nights, up to the latest in the ledger")
    costs.add_argument("--workload", default=None, help="only this workload (default: every one)")
    costs.add_argument(
        "--out", default=None, help="where the chart goes (default: $BATCH_AI_REPORT_DIR/costs or its default)"
    )
    costs.add_argument("--json", action="store_true")
    costs.add_argument("--ledger-url", default=None, help="SQLAlchemy URL (default: BATCH_AI_LEDGER_URL)")
    costs.set_defaults(func=cmd_costs)


def cmd_seed(args) -> int:
    for path in seed_all(Path(args.out), args.date, args.rows).values():
        print(path)
    return 0


def cmd_ui(args) -> int:
    """The Airflow UI (API server) over the demo's Airflow and ledger, with the review page."""
    import subprocess

    from batch_ai.localenv import airflow_bin

    out, home = REPO / "demo-output", REPO / ".airflow"
    ledger_path = out / "batch_ai_ledger.sqlite"
    if not ledger_path.exists():
        print("no demo ledger yet: run `make demo` first", file=sys.stderr)
        return 1
    env = airflow_env(
        home,
        ledger_url=f"sqlite:///{ledger_path}",
        data_dir=out / "data",
        extra={
            # a local demo: no logins, everyone is admin; the review page asks for the reviewer's name
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{args.port}",
        },
    )
    migrate(env)
    print(
        f"Airflow UI on http://127.0.0.1:{args.port}/  (review queue: http://127.0.0.1:{args.port}/plugin/batch-ai-review)"
    )
    print("Ctrl-C stops it.")
    try:
        return subprocess.run(
            [airflow_bin(), "api-server", "-H", "127.0.0.1", "-p", str(args.port), "-w", "1"], env=env
        ).returncode
    except KeyboardInterrupt:
        return 0


def _ledger(args):
    from batch_ai.ledger.store import Ledger

    return Ledger.connect(args.ledger_url)


def _short(value, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cmd_review(args) -> int:
    from batch_ai import review

    ledger = _ledger(args)
    if args.action == "list":
        items = review.queue(ledger, args.workload, args.limit)
        if args.json:
            print(json.dumps(items, indent=2, ensure_ascii=False, default=str))
            return 0
        if not items:
            print("the review queue is empty")
        for it in items:
            print(f"#{it['id']}  {it['workload']}  {it['source_id']}  (attempts {it['attempts']}): {it['reason']}")
            print(f"    output: {_short(it['output'])}")
        return 0
    output = None
    if args.action == "edit":
        if not args.output:
            print("edit needs --output JSON (or --output @file.json)", file=sys.stderr)
            return 2
        raw = Path(args.output[1:]).read_text() if args.output.startswith("@") else args.output
        try:
            output = json.loads(raw)
        except json.JSONDecodeError as exc:
            print(f"--output is not JSON: {exc}", file=sys.stderr)
            return 2
    try:
        after = review.decide(ledger, args.record_id, args.action, args.reviewer or "", args.note, output)
    except review.ReviewError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"record {after['id']} ({after['workload']} {after['source_id']}) is now {after['state']}: "
        f"{after['history'][-1]['reason']}"
    )
    return 0


def cmd_history(args) -> int:
    from batch_ai import review

    ledger = _ledger(args)
    if args.record.isdigit() and not args.workload:
        records = [ledger.record(int(args.record))]
    elif args.workload:
        records = ledger.find_records(args.workload, args.record)
    else:
        print("give a record id, or --workload W and a source id", file=sys.stderr)
        return 2
    if not records:
        print(f"no record for source id {args.record} in {args.workload}", file=sys.stderr)
        return 1
    views = [review.view(ledger, rec) for rec in records]
    if args.json:
        print(json.dumps(views, indent=2, ensure_ascii=False, default=str))
        return 0
    for v in views:
        print(
            f"record {v['id']}: {v['workload']} {v['source_id']}  prompt {v['prompt_version']}  "
            f"schema {v['schema_version']}  model {v['model']}  now {v['state']}"
        )
        for h in v["history"]:
            job = f"  job {h['job']}" if h["job"] else ""
            request = f"  request {h['request_id']}" if h["request_id"] else ""
            print(
                f"  {h['at']}  {h['from'] or 'new':>15} -> {h['to']:<15} by {h['by']:<18} attempt {h['attempt']}"
                f"{job}{request}  run {h['run_id'] or '-'}"
            )
            if h["reason"]:
                print(f"      {h['reason']}")
        if v["output"] is not None:
            print(f"  output now: {_short(v['output'], 300)}")
    return 0


def cmd_stack(args) -> int:
    from batch_ai import stack

    args.pg = args.pg or stack.DEFAULT_PG
    try:
        return stack.main(args)
    except stack.StackError as exc:
        print(f"stack {args.action}: {exc}", file=sys.stderr)
        return 1


def _stack_parser(sub) -> None:
    stack = sub.add_parser(
        "stack", help="a local deployment: api-server, scheduler, dag-processor, triggerer, Celery worker"
    )
    stack.add_argument("action", choices=("up", "down", "status", "env"))
    stack.add_argument("--dir", default=str(REPO / ".stack"), help="where PIDs, logs and the Airflow home go")
    stack.add_argument("--pg", default=None, help="PostgreSQL server URL (default: the local one)")
    stack.add_argument("--database", default="batch_ai_stack", help="the database for the metadata and the ledger")
    stack.add_argument("--port", type=int, default=8080, help="the api-server's port")
    stack.add_argument("--date", default=None, help="the day of sample data to seed (default: yesterday)")
    stack.set_defaults(func=cmd_stack)


def cmd_db(args) -> int:
    from batch_ai.ledger import migrations
    from batch_ai.ledger.engine import ledger_url, make_engine

    if args.action == "history":
        for revision, summary in migrations.history():
            print(f"{revision}  {summary}")
        return 0
    engine = make_engine(args.ledger_url or ledger_url())
    try:
        if args.action == "upgrade":
            applied = migrations.upgrade(engine)
            print(f"applied {', '.join(applied)}" if applied else "nothing to do")
        with engine.connect() as conn:
            now = migrations.current(conn)
        print(f"ledger {engine.url.render_as_string(hide_password=True)} is at {now or 'no revision'}", end="")
        print(" (head)" if now == migrations.HEAD else f"; head is {migrations.HEAD}: `db upgrade`")
    except migrations.SchemaError as exc:
        print(f"db {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def _db_parser(sub) -> None:
    db = sub.add_parser("db", help="the ledger's schema: upgrade it, show its revision, list the revisions")
    db.add_argument("action", choices=("upgrade", "current", "history"))
    db.add_argument("--ledger-url", default=None, help="SQLAlchemy URL (default: BATCH_AI_LEDGER_URL)")
    db.set_defaults(func=cmd_db)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batch_ai")
    sub = parser.add_subparsers(dest="command", required=True)
    _demo_parser(sub)
    report = sub.add_parser("report", help="print the latest run report of a workload")
    report.add_argument("--workload", default="ticket_summaries")
    report.add_argument("--ledger-url", default=None, help="SQLAlchemy URL (default: BATCH_AI_LEDGER_URL)")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_report)
    _costs_parser(sub)
    seed = sub.add_parser("seed", help="write one day of demo data for every workload")
    seed.add_argument("--out", required=True)
    seed.add_argument("--date", default="2026-11-25")
    seed.add_argument("--rows", type=int, default=300)
    seed.set_defaults(func=cmd_seed)
    ui = sub.add_parser("ui", help="serve the Airflow UI over the demo's Airflow and ledger (with the review page)")
    ui.add_argument("--port", type=int, default=8080)
    ui.set_defaults(func=cmd_ui)
    rv = sub.add_parser("review", help="the review queue: list records waiting for a person, or decide one")
    rv.add_argument("action", choices=("list", "approve", "reject", "edit", "requeue"))
    rv.add_argument("record_id", nargs="?", help="the record's id (from `review list`)")
    rv.add_argument(
        "--reviewer",
        default=os.environ.get("BATCH_AI_REVIEWER"),
        help="your name, kept in the audit (default: BATCH_AI_REVIEWER)",
    )
    rv.add_argument("--note", default=None, help="why, kept in the audit")
    rv.add_argument("--output", default=None, help="edit: the corrected output as JSON, or @file.json")
    rv.add_argument("--workload", default=None, help="list: only this workload")
    rv.add_argument("--limit", type=int, default=200)
    rv.add_argument("--json", action="store_true")
    rv.add_argument("--ledger-url", default=None, help="SQLAlchemy URL (default: BATCH_AI_LEDGER_URL)")
    rv.set_defaults(func=cmd_review)
    hist = sub.add_parser("history", help="a record's full history: every state change, job, attempt, reason, reviewer")
    hist.add_argument("record", help="a record id, or a source id with --workload")
    hist.add_argument("--workload", default=None)
    hist.add_argument("--json", action="store_true")
    hist.add_argument("--ledger-url", default=None, help="SQLAlchemy URL (default: BATCH_AI_LEDGER_URL)")
    hist.set_defaults(func=cmd_history)
    _stack_parser(sub)
    _db_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "review" and args.action != "list" and not args.record_id:
        parser.error(f"review {args.action} needs a record id")
    if args.command == "demo" and args.nights != 1 and (args.nights < 1 or args.workload != "ticket_summaries"):
        parser.error("--nights needs --workload ticket_summaries and a positive count")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
