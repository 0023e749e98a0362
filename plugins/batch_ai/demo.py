"""``make demo``: one night of every workload, offline, against the bundled provider emulator.

Seeds a day of realistic source data for each workload, starts the emulator with a realistic
share of faults, runs ``airflow dags test`` for each workload against a project-local Airflow and
one SQLite ledger in ``demo-output/``, and prints the night's report.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from batch_ai.localenv import REPO, airflow_env, dags_test, migrate
from batch_ai.providers import PROVIDERS

WORKLOADS = (
    "ticket_summaries",
    "document_tagging",
    "lead_scoring",
    "compliance_review",
    "kb_embeddings",
    "model_evaluation",
)
OUT = REPO / "demo-output"

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
    from sample_data import compliance, documents, eval_set, kb_articles, leads, tickets

    return {
        "ticket_summaries": tickets.write_day(data, day, count=rows),
        "document_tagging": documents.write_day(data, day),
        "lead_scoring": leads.write_day(data, day),
        "compliance_review": compliance.write_day(data, day),
        "kb_embeddings": kb_articles.write_day(data, day),
        "model_evaluation": eval_set.write_prompt_set(data),
    }


def run_demo(
    *, workload: str | None, provider: str | None, day: str, rows: int, faults: dict | None, nights: int = 1
) -> int:
    """The demo night (or ``nights`` nights up to ``day``, of ticket_summaries); 0 when every
    workload ran and accounted for every row."""
    ledger_url = f"sqlite:///{_fresh(OUT)}"
    workloads = [workload] if workload else _runnable(list(WORKLOADS), provider)
    for name, path in seed_all(OUT / "data", day, rows).items():
        if name in workloads:
            print(f"seeded {name}: {path.relative_to(REPO)}")
    days = _earlier_nights(day, nights, rows) + [day]
    extra = {"BATCH_AI_REPORT_DIR": str(OUT), **({"BATCH_AI_PROVIDER": provider} if provider else {})}
    env = airflow_env(REPO / ".airflow", ledger_url=ledger_url, data_dir=OUT / "data", extra=extra)
    print("preparing the Airflow metadata database in .airflow/ ...")
    migrate(env)
    failed = [name for d in days for name in _run_nights(env, workloads, d, provider, faults or demo_faults())]
    reports, missing = _print_reports(ledger_url, workloads)
    if nights > 1:
        from batch_ai.__main__ import main

        print()
        main(["costs", "--days", "30", "--ledger-url", ledger_url, "--out", str(OUT / "costs")])
    if failed or missing:
        print(f"\nfailed: {', '.join(sorted(set(failed + missing)))} (logs in demo-output/)", file=sys.stderr)
        return 1
    return 0 if all(r.get("lost", 0) == 0 for r in reports.values()) else 1


def _earlier_nights(day: str, nights: int, rows: int) -> list[str]:
    """Seed the ``nights - 1`` days of closed tickets before ``day`` (each day its own ticket ids),
    oldest first; return those days."""
    from datetime import date, timedelta

    from sample_data import tickets

    days = [(date.fromisoformat(day) - timedelta(days=n)).isoformat() for n in range(nights - 1, 0, -1)]
    for n, earlier in enumerate(reversed(days), start=1):
        path = tickets.write_day(OUT / "data", earlier, count=rows, first_id=100000 + n * 1_000_000)
        print(f"seeded ticket_summaries: {path.relative_to(REPO)}")
    return days


def _runnable(workloads: list[str], provider: str | None) -> list[str]:
    """The workloads the provider can run: an embeddings workload is left out (and said so) on a
    provider whose batch API or adapter has no embeddings (the capability table)."""
    if not provider:
        return workloads
    from batch_ai.providers.capabilities import capabilities

    caps = capabilities().provider(provider)
    if "embeddings" in caps.endpoints:
        return workloads
    why = (caps.extra.get("embeddings") or {}).get("note", "not in its endpoints")
    print(f"kb_embeddings left out: {provider} has no batch embeddings here ({why})")
    return [w for w in workloads if w != "kb_embeddings"]


def _fresh(out: Path) -> Path:
    """Remove the last demo's ledger (with its SQLite journal files: a journal left from another
    database breaks the new one), data and evaluation; return the ledger's path."""
    ledger_path = out / "batch_ai_ledger.sqlite"
    stale = [ledger_path, *(ledger_path.with_name(ledger_path.name + s) for s in ("-wal", "-shm", ".claims"))]
    for path in (*stale, out / "data", out / "model_evaluation", out / "costs"):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    out.mkdir(exist_ok=True)
    return ledger_path


def _run_nights(env: dict[str, str], workloads: list[str], day: str, provider: str | None, faults: dict) -> list[str]:
    """``airflow dags test`` for each workload against the emulator; the names of those that failed."""
    from provider_emulator.launcher import Emulator

    failed = []
    with Emulator(faults, log_file=OUT / "emulator.log") as emu:
        on = f"; every workload runs on {provider}" if provider else ""
        print(f"provider emulator listening on {emu.base_url}{on}")
        env = {**env, **emu.airflow_env()}
        for name in workloads:
            started = time.monotonic()
            log = OUT / f"{name}.airflow.log"
            print(f"running: airflow dags test {name} {day}  (log: demo-output/{log.name}) ...", end=" ", flush=True)
            proc = dags_test(env, name, day, log)
            print(f"{'done' if proc.returncode == 0 else 'FAILED'} in {time.monotonic() - started:.0f}s")
            if proc.returncode != 0:
                failed.append(name)
                print("\n".join(log.read_text().splitlines()[-30:]), file=sys.stderr)
    return failed


def _print_reports(ledger_url: str, workloads: list[str]) -> tuple[dict[str, dict], list[str]]:
    """Print the night's report (and write it and each workload's to demo-output/)."""
    from batch_ai.ledger.store import Ledger
    from batch_ai.report import dumps, format_combined, format_report

    ledger = Ledger.connect(ledger_url)
    reports = {name: ledger.latest_report(name) for name in workloads}
    missing = [name for name, report in reports.items() if report is None]
    reports = {name: report for name, report in reports.items() if report is not None}
    for name, report in reports.items():
        (OUT / f"{name}.json").write_text(dumps(report) + "\n")
    print()
    if len(workloads) == 1 and reports:
        only = next(iter(reports.values()))
        print(format_report(only) if "targets" not in only else format_combined({workloads[0]: only}))
    else:
        combined = format_combined(reports)
        (OUT / "report.txt").write_text(combined + "\n")
        print(combined)
        print("\nreports in demo-output/: report.txt (this), <workload>.json, model_evaluation/ (table and chart)")
    waiting = ledger.review_counts()
    if waiting:
        print(
            f"\n{sum(waiting.values())} record(s) wait in the review queue "
            f"({', '.join(f'{w} {n}' for w, n in waiting.items())}). Work them from the command line:\n"
            f"  export BATCH_AI_LEDGER_URL=sqlite:///{Path(ledger_url.removeprefix('sqlite:///')).relative_to(REPO)}\n"
            f"  .venv/bin/python -m batch_ai review list\n"
            f"  .venv/bin/python -m batch_ai review approve <id> --reviewer <your name>\n"
            f"or in the Airflow UI (Review, in the navigation): make ui"
        )
    return reports, missing
