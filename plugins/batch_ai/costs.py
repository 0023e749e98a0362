"""The true cost of a night.

What the provider billed (batch jobs, with the part spent on retry rounds, reruns and real-time
calls), what the same tokens would have cost in real time, and what teams miss: a person's time
on every record sent to review (``cost.review_minutes`` x ``cost.reviewer_hourly_usd``) and the
storage of the request files staged and the result files kept (their bytes x the dated storage
price of the capability table). The true cost is the batch cost plus both. The net saving is
against an all-real-time night, which pays the real-time price for the same tokens and the same
review labour (the same records go to a person) but stages no files: the real-time equivalent
plus the review labour, minus the true cost.

:func:`run_costs` makes a run report's ``cost``; :func:`trend` reads the reports of the last
nights from the ledger for ``python -m batch_ai costs``, which prints them per night and
workload and saves a chart (:func:`chart`).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from batch_ai.ledger.states import State
from batch_ai.providers.capabilities import Storage, capabilities

#: The states of a record that got an answer from the model (for the invalid-output rate).
ANSWERED = (State.COMPLETED, State.PUBLISHED, State.REVIEW_REQUIRED, State.INVALID_OUTPUT, State.REJECTED)


def run_costs(workload, ledger, run_id: str, jobs, sample: dict[str, Any]) -> dict[str, Any]:
    """What the run's jobs cost, what the same tokens cost in real time, where it went, and the
    costs beside the provider's bill: review labour and storage."""
    caps = capabilities()
    pcaps = caps.provider(workload.spec.provider.name)
    batch_cost = sum(j.cost_usd or 0.0 for j in jobs)
    # real-time calls (below a minimum, or after a missed deadline) were paid at the full price
    realtime_paid = sum(j.cost_usd or 0.0 for j in jobs if (j.provider_job_id or "").startswith("realtime:"))
    realtime_paid += sum((j.details or {}).get("realtime_cost_usd", 0.0) for j in jobs)
    discounted = batch_cost - realtime_paid
    realtime_equivalent = realtime_paid + (discounted / pcaps.batch_discount if pcaps.batch_discount else discounted)
    retries = sum(j.cost_usd or 0.0 for j in jobs if (j.details or {}).get("round", 0) > 0)
    reruns = sum(j.repeat_cost_usd or 0.0 for j in jobs if (j.details or {}).get("round", 0) == 0)
    spec = workload.spec.cost
    reviewed = ledger.run_sent_to_review(workload.name, run_id)
    review = reviewed * spec.review_minutes / 60.0 * spec.reviewer_hourly_usd
    kept_days = workload.spec.retention.provider_files_days
    deleted = workload.spec.provider.delete_files_after_collect
    staged, kept, storage = _storage(jobs, pcaps.storage, deleted, KEPT_FOR_EVER if kept_days is None else kept_days)
    true_cost = batch_cost + review + storage
    return {
        "batch_usd": round(batch_cost, 6),
        "realtime_equivalent_usd": round(realtime_equivalent, 6),
        "savings_usd": round(realtime_equivalent - batch_cost, 6),
        "retries_usd": round(retries, 6),  # the retry rounds' jobs
        "reruns_usd": round(reruns, 6),  # later attempts of records a backfill (or an earlier run) sent again
        "realtime_paid_usd": round(realtime_paid, 6),
        "sample_usd": sample.get("cost_usd", 0.0),
        "batch_discount": pcaps.batch_discount,
        "prices_as_of": caps.prices_as_of,
        "review_records": reviewed,  # records this run sent to a person
        "review_minutes": spec.review_minutes,
        "reviewer_hourly_usd": spec.reviewer_hourly_usd,
        "review_usd": round(review, 6),
        "staged_bytes": staged,  # the request files sent
        "result_bytes": kept,  # the result files read
        "storage_usd": round(storage, 6),
        "storage_usd_per_gb_month": pcaps.storage.usd_per_gb_month,
        "storage_prices_as_of": pcaps.storage.as_of,
        "true_cost_usd": round(true_cost, 6),
        "net_saving_usd": round(realtime_equivalent + review - true_cost, 6),
    }


#: days files kept for ever (``retention.provider_files_days: null``) are priced for: a year
KEPT_FOR_EVER = 365


def _storage(jobs, price: Storage, deleted: bool, kept_days: float) -> tuple[int, int, float]:
    """Bytes staged and of results over the run's jobs, and what keeping them costs: from the
    job's submission to its collection when the files are deleted after collection, else for as
    long as the retention policy keeps them (``retention.provider_files_days``)."""
    staged = kept = 0
    usd = 0.0
    for job in jobs:
        details = job.details or {}
        sent, results = int(details.get("staged_bytes") or 0), int(details.get("result_bytes") or 0)
        staged, kept = staged + sent, kept + results
        if not deleted:
            days = kept_days
        elif job.submitted_at and job.ended_at:
            days = max((job.ended_at - job.submitted_at).total_seconds(), 0.0) / 86400
        else:
            days = 0.0
        usd += price.cost(sent + results, days)
    return staged, kept, usd


# -- the nights' trend -----------------------------------------------------------------------

_SUMMED = (
    "batch_usd",
    "realtime_equivalent_usd",
    "retries_usd",
    "reruns_usd",
    "review_usd",
    "review_records",
    "storage_usd",
    "staged_bytes",
    "result_bytes",
)


_COUNTS = ("runs", "invalid", "answered", "review_records", "staged_bytes", "result_bytes")


def night_of(run) -> date:
    """The night a run worked on: the day its report names, else its data interval's or start's day."""
    named = (run.report or {}).get("night")
    if named:
        return date.fromisoformat(str(named)[:10])
    return (run.interval_start or run.started_at).date()


def trend(ledger, days: int, workload: str | None = None) -> dict[str, Any]:
    """Per night and workload, over the ``days`` nights up to the latest in the ledger: the
    reports' costs summed (several runs of a night, e.g. a backfill, add up) and the share of
    answered records whose output was invalid."""
    runs = [r for r in ledger.finished_runs(workload) if "cost" in (r.report or {})]
    # an evaluation's summary has no cost of its own: each pair's run report carries it
    if not runs:
        return {"rows": [], "first": None, "last": None, "days": days}
    last = max(night_of(r) for r in runs)
    first = last - timedelta(days=days - 1)
    rows: dict[tuple[date, str], dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    for run in runs:
        night = night_of(run)
        if night < first:
            continue
        row, report = rows[(night, run.workload)], run.report
        cost = report["cost"]
        row["runs"] += 1
        for key in _SUMMED:
            row[key] += cost.get(key, 0) or 0
        states = report.get("states", {})
        row["invalid"] += states.get(State.INVALID_OUTPUT, 0)
        row["answered"] += sum(states.get(s, 0) for s in ANSWERED)
    out = []
    for (night, name), row in sorted(rows.items()):
        true_cost = row["batch_usd"] + row["review_usd"] + row["storage_usd"]
        out.append(
            {
                "night": night.isoformat(),
                "workload": name,
                **{
                    k: (int(v) if k in ("runs", "invalid", "answered", "review_records") else v) for k, v in row.items()
                },
                "true_cost_usd": true_cost,
                "net_saving_usd": row["realtime_equivalent_usd"] + row["review_usd"] - true_cost,
                "invalid_rate": row["invalid"] / row["answered"] if row["answered"] else None,
            }
        )
    return {"rows": out, "first": first.isoformat(), "last": last.isoformat(), "days": days}


def format_trend(result: dict[str, Any]) -> str:
    """The nights' table: one line per night and workload, then each workload's total."""
    head = (
        f"{'night':<10} {'workload':<18} {'runs':>4} {'batch $':>8} {'real-time $':>11} {'retries $':>9} "
        f"{'reruns $':>8} {'review $':>8} {'storage $':>9} {'net saved $':>11} {'invalid':>7}"
    )
    rule = "-" * len(head)
    lines = [
        f"batch-ai costs: {result['first']} .. {result['last']} "
        f"({result['days']} nights up to the latest in the ledger)",
        head,
        rule,
    ]
    lines += [_trend_line(r["night"], r) for r in result["rows"]]
    lines.append(rule)
    totals: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    for r in result["rows"]:
        for key, value in r.items():
            if isinstance(value, (int, float)) and key != "invalid_rate":
                totals[r["workload"]][key] += value
    for name, total in sorted(totals.items()):
        total["workload"] = name
        total["invalid_rate"] = total["invalid"] / total["answered"] if total["answered"] else None
        lines.append(_trend_line("total", total))
    return "\n".join(lines)


def _trend_line(label: str, r: dict[str, Any]) -> str:
    rate = f"{r['invalid_rate']:.1%}" if r.get("invalid_rate") is not None else "-"
    return (
        f"{label:<10} {r['workload']:<18} {int(r['runs']):>4} {r['batch_usd']:>8.4f} "
        f"{r['realtime_equivalent_usd']:>11.4f} {r['retries_usd']:>9.4f} {r['reruns_usd']:>8.4f} "
        f"{r['review_usd']:>8.4f} {r['storage_usd']:>9.6f} {r['net_saving_usd']:>11.4f} {rate:>7}"
    )


def chart(result: dict[str, Any], path: Path) -> Path:
    """Per night and workload: the true cost (and its batch part), the net saving against an
    all-real-time night, and the invalid-output rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates
    import matplotlib.pyplot as plt

    by_workload: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in result["rows"]:
        by_workload[r["workload"]].append(r)
    fig, (cost, saving, invalid) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for i, (name, rows) in enumerate(sorted(by_workload.items())):
        colour, nights = f"C{i}", [date.fromisoformat(r["night"]) for r in rows]
        cost.plot(nights, [r["true_cost_usd"] for r in rows], "o-", color=colour, label=f"{name}: true cost")
        cost.plot(nights, [r["batch_usd"] for r in rows], "x:", color=colour, label=f"{name}: of it, batch")
        saving.plot(nights, [r["net_saving_usd"] for r in rows], "s-", color=colour, label=name)
        rates = [100 * r["invalid_rate"] if r["invalid_rate"] is not None else float("nan") for r in rows]
        invalid.plot(nights, rates, "o-", color=colour, label=name)
    cost.set_ylabel("true cost (USD)")
    cost.set_yscale("symlog", linthresh=0.01)  # review labour dwarfs token costs: keep both visible
    cost.set_title(
        f"batch-ai costs per night, {result['first']} .. {result['last']} "
        f"(true cost = batch + review labour + storage)",
        fontsize=9,
    )
    saving.set_ylabel("net saving (USD)")
    saving.axhline(0, color="#888", linewidth=0.8)
    invalid.set_ylabel("invalid outputs (%)")
    invalid.set_ylim(bottom=0)
    for ax in (cost, saving, invalid):
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    cost.set_ylim(bottom=0)
    invalid.xaxis.set_major_locator(matplotlib.dates.DayLocator())
    invalid.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%Y-%m-%d"))
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
