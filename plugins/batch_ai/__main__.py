"""Command line: ``python -m batch_ai {demo,report,seed}``."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from batch_ai.localenv import REPO, airflow_env, dags_test, migrate

PROVIDERS = ("openai", "anthropic", "vertex", "bedrock")


def demo_faults(provider: str) -> dict:
    """A realistic night: a few per-line errors and malformed answers, results out of order."""
    return {
        provider: {
            "seed": 11,
            "shuffle": True,
            "line_error_rate": 0.03,
            "malformed": {"non_json": 0.01, "html": 0.01, "bad_enum": 0.01, "wrong_id": 0.005},
        }
    }


def cmd_demo(args) -> int:
    from provider_emulator.launcher import Emulator
    from sample_data.tickets import write_day

    from batch_ai.ledger.store import Ledger
    from batch_ai.report import dumps, format_report

    out = REPO / "demo-output"
    home = REPO / ".airflow"
    ledger_path = out / "batch_ai_ledger.sqlite"
    for stale in (ledger_path, out / "data"):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    out.mkdir(exist_ok=True)
    data = write_day(out / "data", args.date, count=args.rows)
    print(f"seeded {args.rows} ticket rows into {data.relative_to(REPO)}")
    base_env = airflow_env(home, ledger_url=f"sqlite:///{ledger_path}", data_dir=out / "data",
                           extra={"BATCH_AI_PROVIDER": args.provider})
    print("preparing the Airflow metadata database in .airflow/ ...")
    migrate(base_env)
    faults = json.loads(args.faults) if args.faults else demo_faults(args.provider)
    with Emulator(faults, log_file=out / "emulator.log") as emu:
        print(f"provider emulator listening on {emu.base_url}; the workload runs on {args.provider}")
        env = {**base_env, **emu.airflow_env()}
        started = time.monotonic()
        print(f"running: airflow dags test {args.workload} {args.date}  (log: demo-output/{args.workload}.airflow.log)")
        proc = dags_test(env, args.workload, args.date, out / f"{args.workload}.airflow.log")
        elapsed = time.monotonic() - started
    print(f"emulator stopped; the DAG run took {elapsed:.0f}s")
    ledger = Ledger.connect(f"sqlite:///{ledger_path}")
    report = ledger.latest_report(args.workload)
    if proc.returncode != 0 or report is None:
        tail = (out / f"{args.workload}.airflow.log").read_text().splitlines()[-40:]
        print("\n".join(tail), file=sys.stderr)
        print(f"the DAG run failed (exit {proc.returncode}); full log in demo-output/{args.workload}.airflow.log", file=sys.stderr)
        return 1
    path = out / f"{args.workload}.json"
    path.write_text(dumps(report) + "\n")
    print()
    print(format_report(report))
    print(f"\nreport written to {path.relative_to(REPO)}")
    return 0 if report["lost"] == 0 else 1


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
    from sample_data.tickets import write_day

    print(write_day(Path(args.out), args.date, count=args.rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batch_ai")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="seed data, start the emulator, run the DAG with airflow dags test, print the report")
    demo.add_argument("--workload", default="ticket_summaries")
    demo.add_argument("--provider", choices=PROVIDERS, default="openai",
                      help="run the workload on this provider (through the emulator)")
    demo.add_argument("--date", default="2026-11-25", help="the day whose closed tickets are processed")
    demo.add_argument("--rows", type=int, default=300)
    demo.add_argument("--faults", default=None, help="emulator fault configuration as JSON (default: a realistic mix)")
    demo.set_defaults(func=cmd_demo)
    report = sub.add_parser("report", help="print the latest run report of a workload")
    report.add_argument("--workload", default="ticket_summaries")
    report.add_argument("--ledger-url", default=None, help="SQLAlchemy URL (default: BATCH_AI_LEDGER_URL)")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_report)
    seed = sub.add_parser("seed", help="write one day of demo tickets")
    seed.add_argument("--out", required=True)
    seed.add_argument("--date", default="2026-11-25")
    seed.add_argument("--rows", type=int, default=300)
    seed.set_defaults(func=cmd_seed)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
