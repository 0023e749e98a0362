"""Command line: ``python -m batch_ai {demo,report,seed,review,history}``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from batch_ai.localenv import REPO, airflow_env, dags_test, migrate

PROVIDERS = ("openai", "anthropic", "vertex", "bedrock")


WORKLOADS = ("ticket_summaries", "document_tagging", "lead_scoring", "compliance_review", "model_evaluation")

#: The evaluation's candidates answer enum questions wrong this often (the emulator's stand-in
#: for weaker and stronger models).
MODEL_ERROR_RATES = {"gpt-4o-mini": 0.06, "gpt-4.1-nano": 0.16, "claude-haiku-4-5": 0.03, "gemini-2.0-flash-001": 0.09}


def demo_faults() -> dict:
    """A realistic night on every provider: a few per-line errors, refusals and malformed
    answers, results out of order."""
    night = {
        "seed": 11,
        "shuffle": True,
        "line_error_rate": 0.03,
        "refusal_rate": 0.01,
        "malformed": {"non_json": 0.01, "html": 0.01, "bad_enum": 0.01, "wrong_id": 0.005},
        "model_error_rates": MODEL_ERROR_RATES,
    }
    return {p: dict(night) for p in PROVIDERS}


def seed_all(data: Path, day: str, rows: int) -> dict[str, Path]:
    """One day's source data for every workload, and the evaluation's labelled set."""
    from sample_data import compliance, documents, eval_set, leads, tickets

    return {
        "ticket_summaries": tickets.write_day(data, day, count=rows),
        "document_tagging": documents.write_day(data, day),
        "lead_scoring": leads.write_day(data, day),
        "compliance_review": compliance.write_day(data, day),
        "model_evaluation": eval_set.write_prompt_set(data),
    }


def cmd_demo(args) -> int:
    from provider_emulator.launcher import Emulator

    from batch_ai.ledger.store import Ledger
    from batch_ai.report import dumps, format_combined, format_report

    out = REPO / "demo-output"
    home = REPO / ".airflow"
    ledger_path = out / "batch_ai_ledger.sqlite"
    # the ledger with its SQLite journal files: a journal left from another database breaks the new one
    stale_ledger = [ledger_path, ledger_path.with_name(ledger_path.name + "-wal"), ledger_path.with_name(ledger_path.name + "-shm")]
    for stale in (*stale_ledger, out / "data", out / "model_evaluation"):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    out.mkdir(exist_ok=True)
    workloads = [args.workload] if args.workload else list(WORKLOADS)
    for name, path in seed_all(out / "data", args.date, args.rows).items():
        if name in workloads:
            print(f"seeded {name}: {path.relative_to(REPO)}")
    extra = {"BATCH_AI_REPORT_DIR": str(out)}
    if args.provider:
        extra["BATCH_AI_PROVIDER"] = args.provider
    base_env = airflow_env(home, ledger_url=f"sqlite:///{ledger_path}", data_dir=out / "data", extra=extra)
    print("preparing the Airflow metadata database in .airflow/ ...")
    migrate(base_env)
    faults = json.loads(args.faults) if args.faults else demo_faults()
    failed = []
    with Emulator(faults, log_file=out / "emulator.log") as emu:
        print(f"provider emulator listening on {emu.base_url}" + (f"; every workload runs on {args.provider}" if args.provider else ""))
        env = {**base_env, **emu.airflow_env()}
        for name in workloads:
            started = time.monotonic()
            log = out / f"{name}.airflow.log"
            print(f"running: airflow dags test {name} {args.date}  (log: demo-output/{log.name}) ...", end=" ", flush=True)
            proc = dags_test(env, name, args.date, log)
            print(f"{'done' if proc.returncode == 0 else 'FAILED'} in {time.monotonic() - started:.0f}s")
            if proc.returncode != 0:
                failed.append(name)
                print("\n".join(log.read_text().splitlines()[-30:]), file=sys.stderr)
    ledger = Ledger.connect(f"sqlite:///{ledger_path}")
    reports = {}
    for name in workloads:
        report = ledger.latest_report(name)
        if report is None:
            failed.append(name)
            continue
        reports[name] = report
        (out / f"{name}.json").write_text(dumps(report) + "\n")
    if len(workloads) == 1 and reports:
        only = next(iter(reports.values()))
        print()
        print(format_report(only) if "targets" not in only else format_combined({workloads[0]: only}))
    else:
        combined = format_combined(reports)
        (out / "report.txt").write_text(combined + "\n")
        print()
        print(combined)
        print("\nreports in demo-output/: report.txt (this), <workload>.json, model_evaluation/ (table and chart)")
    waiting = ledger.review_counts()
    if waiting:
        url = f"sqlite:///{ledger_path.relative_to(REPO)}"
        print(f"\n{sum(waiting.values())} record(s) wait in the review queue "
              f"({', '.join(f'{w} {n}' for w, n in waiting.items())}). Work them from the command line:\n"
              f"  export BATCH_AI_LEDGER_URL={url}\n"
              f"  .venv/bin/python -m batch_ai review list\n"
              f"  .venv/bin/python -m batch_ai review approve <id> --reviewer <your name>\n"
              f"or in the Airflow UI (Review queue): make ui")
    if failed:
        print(f"\nfailed: {', '.join(sorted(set(failed)))} (logs in demo-output/)", file=sys.stderr)
        return 1
    return 0 if all(r.get("lost", 0) == 0 for r in reports.values()) else 1


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
    env = airflow_env(home, ledger_url=f"sqlite:///{ledger_path}", data_dir=out / "data", extra={
        # a local demo: no logins, everyone is admin; the review page asks for the reviewer's name
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{args.port}",
    })
    migrate(env)
    print(f"Airflow UI on http://127.0.0.1:{args.port}/  (review queue: http://127.0.0.1:{args.port}/plugin/batch-ai-review)")
    print("Ctrl-C stops it.")
    try:
        return subprocess.run([airflow_bin(), "api-server", "-H", "127.0.0.1", "-p", str(args.port), "-w", "1"], env=env).returncode
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
    print(f"record {after['id']} ({after['workload']} {after['source_id']}) is now {after['state']}: "
          f"{after['history'][-1]['reason']}")
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
        print(f"record {v['id']}: {v['workload']} {v['source_id']}  prompt {v['prompt_version']}  "
              f"schema {v['schema_version']}  model {v['model']}  now {v['state']}")
        for h in v["history"]:
            job = f"  job {h['job']}" if h["job"] else ""
            print(f"  {h['at']}  {h['from'] or 'new':>15} -> {h['to']:<15} by {h['by']:<18} attempt {h['attempt']}"
                  f"{job}  run {h['run_id'] or '-'}")
            if h["reason"]:
                print(f"      {h['reason']}")
        if v["output"] is not None:
            print(f"  output now: {_short(v['output'], 300)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batch_ai")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="seed data, start the emulator, run the DAG with airflow dags test, print the report")
    demo.add_argument("--workload", choices=WORKLOADS, default=None, help="run only this workload (default: all five)")
    demo.add_argument("--provider", choices=PROVIDERS, default=None,
                      help="run every workload on this provider (default: each workload's own)")
    demo.add_argument("--date", default="2026-11-25", help="the day whose closed tickets are processed")
    demo.add_argument("--rows", type=int, default=300)
    demo.add_argument("--faults", default=None, help="emulator fault configuration as JSON (default: a realistic mix)")
    demo.set_defaults(func=cmd_demo)
    report = sub.add_parser("report", help="print the latest run report of a workload")
    report.add_argument("--workload", default="ticket_summaries")
    report.add_argument("--ledger-url", default=None, help="SQLAlchemy URL (default: BATCH_AI_LEDGER_URL)")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_report)
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
    rv.add_argument("--reviewer", default=os.environ.get("BATCH_AI_REVIEWER"),
                    help="your name, kept in the audit (default: BATCH_AI_REVIEWER)")
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
    args = parser.parse_args(argv)
    if getattr(args, "action", None) not in (None, "list") and not args.record_id:
        parser.error(f"review {args.action} needs a record id")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
