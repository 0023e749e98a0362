"""Model evaluation: the same labelled prompt set through several provider/model pairs in one
run, each scored against the labels.

Per target: accuracy (an item without a valid answer counts as wrong), the schema-valid rate
of the answers, the refusal rate, how many items needed a retry, the cost per 1,000 items
(batch prices, dated), and the turnaround from the first submission to the last result. The
table goes to the task log; the same figures as JSON and a PNG chart go beside the reports
(``BATCH_AI_REPORT_DIR``, default ``$AIRFLOW_HOME/batch_ai_reports``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from batch_ai.ledger.states import State
from batch_ai.ledger.store import Ledger
from batch_ai.providers.capabilities import capabilities
from batch_ai.workloads import Workload

ANSWERED = {State.COMPLETED, State.PUBLISHED, State.REVIEW_REQUIRED, State.INVALID_OUTPUT, State.REJECTED}


def report_dir() -> Path:
    configured = os.environ.get("BATCH_AI_REPORT_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "batch_ai_reports"


def score_target(workload: Workload, ledger: Ledger, run_id: str, target) -> dict[str, Any]:
    ev = workload.spec.evaluation
    trun = f"{run_id}#{target.key}"
    records = ledger.run_records(workload.name, trun)
    n = len(records)
    valid = [
        r
        for r in records
        if r.output is not None and not r.validation_errors and r.state in ANSWERED and r.state != State.INVALID_OUTPUT
    ]
    invalid = [r for r in records if r.state == State.INVALID_OUTPUT]
    refused = [r for r in records if r.error_kind == "refusal"]
    correct = [r for r in valid if r.output.get(ev.output_field) == (r.input or {}).get(ev.label_field)]
    # the cost of the answers scored (over all their attempts), and the jobs that gave them:
    # an evaluation run again on the same set reuses earlier answers and says so
    cost = sum(r.cost_usd or 0.0 for r in records)
    produced_by = {r.job_id for r in records if r.job_id}
    jobs = ledger.jobs_by_id(produced_by)
    starts = [j.submitted_at for j in jobs if j.submitted_at]
    ends = [j.ended_at for j in jobs if j.ended_at]
    reused = sum(1 for j in jobs if j.run_id != trun)
    turnaround = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    answered = len(valid) + len(invalid)
    window = capabilities().provider(target.provider).window
    return {
        "target": target.key,
        "provider": target.provider,
        "model": target.model,
        "items": n,
        "correct": len(correct),
        "accuracy": round(len(correct) / n, 4) if n else None,
        "schema_valid_rate": round(len(valid) / answered, 4) if answered else None,
        "refusal_rate": round(len(refused) / n, 4) if n else None,
        "retried": sum(1 for r in records if (r.attempts or 0) > 1),
        "cost_usd": round(cost, 6),
        "cost_per_1k_usd": round(cost / n * 1000, 4) if n else None,
        "turnaround_seconds": round(turnaround, 1) if turnaround is not None else None,
        # the provider's batch completion window (capability table): what the turnaround may reach
        "window_hours": window.hours,
        "window_sla_covered": window.sla_covered,
        "answers_from_earlier_runs": reused > 0,
        "states": {s: sum(1 for r in records if r.state == s) for s in sorted({r.state for r in records})},
    }


def evaluate(workload: Workload, ledger: Ledger, run_id: str) -> dict[str, Any]:
    ev = workload.spec.evaluation
    results = [score_target(workload, ledger, run_id, t) for t in ev.targets]
    out_dir = report_dir() / workload.name
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_")
    report = {
        "workload": workload.name,
        "run_id": run_id,
        "prompt_version": workload.spec.prompt.version,
        "schema_version": workload.spec.output_schema.version,
        "metric": f"accuracy: the answer's {ev.output_field!r} against the item's {ev.label_field!r}",
        "prices_as_of": capabilities().prices_as_of,
        "targets": results,
        "json": str(out_dir / f"{stem}.json"),
        "chart": str(out_dir / f"{stem}.png"),
    }
    Path(report["json"]).write_text(json.dumps(report, indent=2) + "\n")
    chart(
        results,
        Path(report["chart"]),
        title=f"{workload.name} ({workload.spec.prompt.version}), prices as of {report['prices_as_of']}",
    )
    ledger.start_run(workload.name, run_id)
    ledger.finish_run(workload.name, run_id, report)
    return report


def format_table(report: dict[str, Any]) -> str:
    head = (
        f"{'provider/model':<44} {'items':>5} {'accuracy':>8} {'valid':>6} {'refused':>7} {'retried':>7} "
        f"{'$/1k':>8} {'turnaround':>10} {'window':>11}"
    )
    lines = [
        f"model evaluation: {report['workload']}  run {report['run_id']}  ({report['metric']})",
        head,
        "-" * len(head),
    ]

    def pct(v):
        return f"{v:.1%}" if v is not None else "-"

    for r in report["targets"]:
        name = r["target"] + (" *" if r.get("answers_from_earlier_runs") else "")
        lines.append(
            f"{name:<44} {r['items']:>5} {pct(r['accuracy']):>8} {pct(r['schema_valid_rate']):>6} "
            f"{pct(r['refusal_rate']):>7} {r['retried']:>7} {r['cost_per_1k_usd'] or 0:>8.4f} "
            f"{(str(round(r['turnaround_seconds'])) + 's') if r['turnaround_seconds'] is not None else '-':>10} "
            f"{window_cell(r):>11}"
        )
    if any(r.get("answers_from_earlier_runs") for r in report["targets"]):
        lines.append("* some answers come from an earlier run over the same items (unchanged items are not sent again)")
    lines.append(
        "window: the provider's batch completion window (include/provider_capabilities.yaml); "
        "no SLA: its batch is not covered by the provider's SLA"
    )
    lines.append(
        f"prices as of {report['prices_as_of']}; table and chart saved as {Path(report['chart']).stem}.json/.png "
        f"in the report directory"
    )
    return "\n".join(lines)


def window_cell(scored: dict[str, Any]) -> str:
    """A pair's completion window as the table shows it, e.g. ``24h`` or ``72h no SLA``."""
    hours = scored.get("window_hours")
    if hours is None:  # scored before the table knew windows
        return "-"
    return f"{hours:g}h" + (" no SLA" if scored.get("window_sla_covered") is False else "")


def chart(results: list[dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy and cost per 1,000 items, one bar per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["target"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 1.2 + 0.6 * len(names)), sharey=True)
    acc = [100 * (r["accuracy"] or 0) for r in results]
    cost = [r["cost_per_1k_usd"] or 0 for r in results]
    left.barh(names, acc, color="#017cee")
    left.set_xlim(0, 100)
    left.set_xlabel("accuracy against the labels (%)")
    for y, v in enumerate(acc):
        left.text(min(v + 1, 88), y, f"{v:.1f}%", va="center", fontsize=9)
    right.barh(names, cost, color="#0f8a3c")
    right.set_xlabel("batch cost per 1,000 items (USD)")
    for y, v in enumerate(cost):
        right.text(v, y, f" ${v:.3f}", va="center", fontsize=9)
    right.set_xlim(0, max(cost or [0]) * 1.35 or 1)
    left.invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
