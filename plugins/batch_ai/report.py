"""The run report: where every extracted row ended up, the provider jobs, tokens and cost."""

from __future__ import annotations

import json
from typing import Any

from batch_ai.costs import run_costs
from batch_ai.deadlines import sla_risk
from batch_ai.ledger.states import State
from batch_ai.ledger.store import Ledger
from batch_ai.providers.capabilities import capabilities
from batch_ai.workloads import Workload


def build_report(
    workload: Workload, ledger: Ledger, run_id: str, open_work: dict[str, Any] | None = None, night: str | None = None
) -> dict[str, Any]:
    """The run's report; ``open_work`` (:func:`batch_ai.recovery.open_work`): what is still queued
    or submitted after the run, and why; ``night``: the day the run read (YYYY-MM-DD)."""
    accounting = ledger.run_accounting(workload.name, run_id)
    details = ledger.run_details(workload.name, run_id)
    jobs = ledger.run_jobs(workload.name, run_id)
    sample = details.get("sample", {})
    return {
        "workload": workload.name,
        "run_id": run_id,
        "night": night,
        "provider": workload.spec.provider.name,
        "model": workload.spec.provider.model,
        "prompt_version": workload.spec.prompt.version,
        "schema_version": workload.spec.output_schema.version,
        "extracted": accounting["extracted"],
        "lost": accounting["lost"],
        "states": accounting["states"],
        "error_kinds": accounting["error_kinds"],
        "retried_records": accounting["retried"],
        "provider_job_ids": [j.provider_job_id for j in jobs if j.provider_job_id],
        "jobs": [_job_entry(j, run_id) for j in jobs],
        "adoption": details.get("adoption") or [],
        "open_work": open_work,
        "examples": ledger.run_examples(
            workload.name,
            run_id,
            [State.DEAD_LETTER, State.INVALID_OUTPUT, State.PROVIDER_ERROR, State.REVIEW_REQUIRED],
        ),
        "review_queue": ledger.review_counts().get(workload.name, 0),
        "publish": details.get("publish"),
        "sample": sample,
        "held": details.get("held"),
        "deadline": details.get("deadline"),
        "sla_risk": sla_risk(workload.spec),
        "budget_usd": workload.spec.budget.max_batch_usd,
        "quality_gate": details["gate"] if details.get("gate") else None,
        "tokens": {"input": sum(j.input_tokens or 0 for j in jobs), "output": sum(j.output_tokens or 0 for j in jobs)},
        "cost": run_costs(workload, ledger, run_id, jobs, sample),
    }


def _job_entry(job, run_id: str) -> dict[str, Any]:
    details = job.details or {}
    return {
        "token": job.token,
        "provider_job_id": job.provider_job_id,
        "status": job.status,
        "records": job.record_count,
        "counts": details.get("counts"),
        **({"adopted_from": job.run_id} if job.adopted_by == run_id else {}),
        **({"split_of": details["split_of"]} if details.get("split_of") else {}),
        **({"refused": details["refused"]} if details.get("refused") else {}),
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as people read it in the task log."""
    lines = [
        f"batch-ai run report: {report['workload']}  run {report['run_id']}",
        f"  provider {report['provider']} / {report['model']}   prompt {report['prompt_version']}   "
        f"schema {report['schema_version']}",
        f"  extracted {report['extracted']}   lost {report['lost']}",
    ]
    if report.get("sla_risk"):
        lines.append(f"  {report['sla_risk']}")
    lines += _state_lines(report) + _outcome_lines(report) + _job_lines(report) + format_recovery(report)
    lines += _cost_lines(report)
    return "\n".join(lines)


def _state_lines(report: dict[str, Any]) -> list[str]:
    """Counts per state, the errors, and a few examples of each state that needs explaining."""
    states = report["states"]
    width = max(len(s) for s in states)
    lines = [f"    {name:<{width}}  {count:>6}" for name, count in states.items() if count]
    if report["error_kinds"]:
        lines.append("  errors: " + ", ".join(f"{k} {v}" for k, v in sorted(report["error_kinds"].items())))
    for state, examples in report.get("examples", {}).items():
        lines.append(f"  e.g. {state}:")
        # a dead letter's key is made from its content; its reason names the row instead
        lines += [
            f"    {'' if e['source_id'].startswith('!') else e['source_id'] + ': '}{(e['reason'] or '')[:110]}"
            for e in examples
        ]
    if report.get("retried_records"):
        lines.append(f"  retried: {report['retried_records']} record(s) needed more than one attempt")
    return lines


def _outcome_lines(report: dict[str, Any]) -> list[str]:
    """The gate, the publish, the review queue and what was held."""
    lines = []
    gate = report.get("quality_gate")
    if gate:
        lines.append(
            f"  quality gate: {'passed' if gate['success'] else 'FAILED'} over {gate['records_ready']} "
            f"record(s) ready to publish"
        )
    if report.get("publish"):
        p = report["publish"]
        lines.append(
            f"  published {p['published']} record(s) to {p.get('table') or p.get('file') or 'the sink'}"
            + (f"; {p['superseded']} older result(s) kept out" if p.get("superseded") else "")
        )
    if report.get("review_queue"):
        lines.append(
            f"  review queue: {report['review_queue']} record(s) of {report['workload']} wait for a person "
            f"(Airflow UI: Review, in the navigation; or python -m batch_ai review list)"
        )
    if report.get("held"):
        lines.append(f"  held for a later run: {report['held']['reason']}")
    return lines


def _job_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for job in report["jobs"]:
        origin = f"; adopted from run {job['adopted_from']}" if job.get("adopted_from") else ""
        origin += f"; half of {job['split_of']}" if job.get("split_of") else ""
        lines.append(
            f"  job {job['provider_job_id'] or '-'}  {job['status']:<10} {job['records']} records  "
            f"({job['token']}{origin})"
        )
        if job.get("refused"):
            lines.append(f"      refused by the provider as a whole: {job['refused'][:160]}")
    if report.get("deadline"):
        d = report["deadline"]
        lines.append(
            f"  deadline missed ({d['deadline_at']}): {d['records']} record(s) sent through real-time "
            f"calls, job(s) {', '.join(d['cancelled'])} cancelled"
        )
    return lines


def _cost_lines(report: dict[str, Any]) -> list[str]:
    c, tk = report["cost"], report["tokens"]
    lines = [
        f"  tokens in {tk['input']}  out {tk['output']}   batch ${c['batch_usd']:.4f}"
        f"  (real-time ${c['realtime_equivalent_usd']:.4f}, saved ${c['savings_usd']:.4f}; "
        f"sample ${c['sample_usd']:.4f})   prices as of {c['prices_as_of']}"
    ]
    extra = [
        f"retries ${c['retries_usd']:.4f}" if c.get("retries_usd") else "",
        f"reruns ${c['reruns_usd']:.4f}" if c.get("reruns_usd") else "",
        f"real-time calls ${c['realtime_paid_usd']:.4f}" if c.get("realtime_paid_usd") else "",
    ]
    if any(extra):
        lines.append("  of the batch cost: " + ", ".join(e for e in extra if e))
    if "true_cost_usd" in c:  # reports made before the true cost was counted have none
        lines.append(
            f"  true cost ${c['true_cost_usd']:.4f} = batch ${c['batch_usd']:.4f} + review labour "
            f"${c['review_usd']:.4f} ({c['review_records']} record(s) x {c['review_minutes']:g} min x "
            f"${c['reviewer_hourly_usd']:g}/h) + storage ${c['storage_usd']:.6f} ({c['staged_bytes']} bytes staged, "
            f"{c['result_bytes']} of results, ${c['storage_usd_per_gb_month']:g}/GB-month as of "
            f"{c['storage_prices_as_of']}); net saving against an all-real-time night (real-time prices, the same "
            f"review labour, nothing staged) ${c['net_saving_usd']:.4f}"
        )
    if report.get("budget_usd"):
        lines.append(
            f"  budget ${report['budget_usd']:.4f}; the sample forecast "
            f"${report['sample'].get('batch_forecast_usd', 0):.4f}"
        )
    return lines


def format_recovery(report: dict[str, Any]) -> list[str]:
    """What the run took over from earlier runs, and what it leaves open, as report lines."""
    lines = []
    for a in report.get("adoption") or []:
        if a["action"] == "skipped":
            continue
        job = f"job {a.get('provider_job_id') or a['token']}" + (f" ({a['token']})" if a.get("provider_job_id") else "")
        lines.append(f"  recovered from run {a['from_run']}: {a['action']} {job}, {a['records']} records: {a['why']}")
    work = report.get("open_work") or {}
    for r in work.get("running", []):
        lines.append(
            f"  still at the provider: job {r['provider_job_id']} ({r['token']}) is {r['status']} with "
            f"{r['records']} record(s) {r['state']}; the next run collects it"
        )
    for r in work.get("other_runs", []):
        lines.append(
            f"  in a job of run {r['run_id']}: {r['records']} record(s) {r['state']} in {r['token']} ({r['status']})"
        )
    if work.get("held"):
        lines.append(
            f"  queued for a later run: {work['held']} record(s) in no job (below a minimum, or over the record limit)"
        )
    for r in work.get("stranded", []):
        lines.append(
            f"  STRANDED: {r['records']} record(s) {r['state']} in job {r['provider_job_id'] or '-'} "
            f"({r['token']}, {r['status']}), which nothing is finishing"
        )
    return lines


def format_dry_run(forecast: dict[str, Any]) -> str:
    """A dry run's forecast as people read it in the task log."""
    if not forecast:
        return "dry run: no forecast was recorded (did extract run?)"
    f = forecast
    intake = ", ".join(f"{k} {v}" for k, v in sorted(f["intake"].items()) if v)
    return "\n".join(
        [
            "batch-ai dry run: nothing was submitted or changed",
            f"  read {f['rows']} row(s) from {len(f['source'])} file(s): {intake or 'nothing new'}",
            f"  would submit {f['would_submit']} record(s) in {f['jobs']} job(s) with prompt {f['prompt_version']}, "
            f"schema {f['schema_version']}",
            f"  estimated tokens in {f['estimated_input_tokens']}  out {f['estimated_output_tokens']} "
            f"({f['output_tokens_basis']})",
            f"  estimated cost: batch ${f['batch_cost_usd']:.4f}  (real-time ${f['realtime_cost_usd']:.4f})   "
            f"prices as of {f['prices_as_of']}",
            *([f"  {f['below_minimum']}"] if f.get("below_minimum") else []),
        ]
    )


def format_combined(reports: dict[str, dict[str, Any]]) -> str:
    """One table over the night's workloads: where every row went, and what it cost."""
    head = (
        f"{'workload':<18} {'rows':>5} {'published':>9} {'review':>6} {'invalid':>7} {'error':>5} {'dead':>4} "
        f"{'dup':>4} {'lost':>4} {'batch $':>8} {'real-time $':>11} {'saved $':>8}"
    )
    rule = "-" * len(head)
    lines = ["batch-ai night: " + ", ".join(reports), head, rule]
    batch = realtime = 0.0
    evaluation = None
    for name, r in reports.items():
        if "targets" in r:  # the model evaluation: scored in its own table below
            evaluation = r
            continue
        st, c = r["states"], r["cost"]
        batch += c["batch_usd"]
        realtime += c["realtime_equivalent_usd"]
        lines.append(
            f"{name:<18} {r['extracted']:>5} {st['published']:>9} {st['review_required']:>6} {st['invalid_output']:>7} "
            f"{st['provider_error']:>5} {st['dead_letter']:>4} {st['duplicate']:>4} {r['lost']:>4} "
            f"{c['batch_usd']:>8.4f} "
            f"{c['realtime_equivalent_usd']:>11.4f} {c['savings_usd']:>8.4f}"
        )
    if evaluation:
        caps = capabilities()
        cost = sum(t["cost_usd"] for t in evaluation["targets"])
        equivalent = sum(t["cost_usd"] / caps.provider(t["provider"]).batch_discount for t in evaluation["targets"])
        items = sum(t["items"] for t in evaluation["targets"])
        batch += cost
        realtime += equivalent
        lines.append(
            f"{'model_evaluation':<18} {items:>5} {'(scored below)':>33} {'':>9} {cost:>8.4f} {equivalent:>11.4f} "
            f"{equivalent - cost:>8.4f}"
        )
    lines += [rule, f"{'total':<18} {'':>49} {batch:>8.4f} {realtime:>11.4f} {realtime - batch:>8.4f}"]
    costs = [r["cost"] for r in reports.values() if "true_cost_usd" in r.get("cost", {})]
    if costs:
        review, storage = sum(c["review_usd"] for c in costs), sum(c["storage_usd"] for c in costs)
        lines.append(
            f"true cost beyond the batch $: review labour ${review:.4f} ({sum(c['review_records'] for c in costs)} "
            f"record(s) sent to a person), storage ${storage:.6f}; net saving against an all-real-time night "
            f"${realtime - batch - storage:.4f}"
        )
    lines.append(
        f"batch prices as of {capabilities().prices_as_of}; real-time $ is what the same tokens cost without "
        f"the batch discount"
    )
    lines += [r["sla_risk"] for r in reports.values() if r.get("sla_risk")]
    if evaluation:
        from batch_ai.evaluation import format_table

        lines += ["", format_table(evaluation)]
    return "\n".join(lines)


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=str)
