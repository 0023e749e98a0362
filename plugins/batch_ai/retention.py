"""The retention policy: what a night leaves behind is deleted once its workload's
``retention`` days have passed, and the ``batch_ai_retention`` DAG says what it deleted and the
bytes it freed (with ``dry_run``: what it would).

Per workload: the files kept at the provider for ended jobs (OpenAI files, the S3 and GCS
objects of Bedrock and Vertex jobs, an Anthropic batch with its results), the input and output of
records that are published or decided (replaced by their hashes; ids, states, costs and the audit
stay), and the audit rows of those records. A record still queued, submitted, waiting for review
or for its publish is never touched.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from batch_ai.ledger.store import Ledger, utcnow
from batch_ai.providers import BatchProvider
from batch_ai.stages.submit import REALTIME, REFUSED, provider_job
from batch_ai.workloads import Workload

log = logging.getLogger(__name__)


def apply(workload: Workload, ledger: Ledger, adapter: BatchProvider, *, dry_run: bool, now=None) -> dict[str, Any]:
    """Apply one workload's policy; returns what was (or, on a dry run, would be) deleted."""
    now = now or utcnow()
    policy = workload.spec.retention
    report: dict[str, Any] = {"workload": workload.name, "dry_run": dry_run, "policy": policy.model_dump()}
    if policy.provider_files_days is not None:
        before = now - timedelta(days=policy.provider_files_days)
        report["provider_files"] = _provider_files(workload, ledger, adapter, before, dry_run)
    if policy.payload_days is not None:
        before = now - timedelta(days=policy.payload_days)
        report["payloads"] = ledger.prune_payloads(workload.name, before, dry_run=dry_run)
    if policy.audit_days is not None:
        before = now - timedelta(days=policy.audit_days)
        report["audit"] = ledger.prune_audit(workload.name, before, dry_run=dry_run)
    report["bytes_freed"] = sum(part.get("bytes", 0) for part in report.values() if isinstance(part, dict))
    log.info("retention %s%s: %s", workload.name, " (dry run)" if dry_run else "", json.dumps(report))
    return report


def _provider_files(workload, ledger: Ledger, adapter, before: datetime, dry_run: bool) -> dict[str, Any]:
    done: dict[str, Any] = {"jobs": 0, "files": 0, "bytes": 0, "unsized": 0, "names": []}
    for job in ledger.jobs_with_files(workload.name, before):
        if job.provider_job_id.startswith((REFUSED, REALTIME)):  # nothing was ever kept at the provider
            if not dry_run:
                ledger.files_deleted(job.id, [], 0)
            continue
        info = provider_job(adapter, job)
        files = adapter.staged_files(info)
        size = sum(n for _, n in files if n is not None)
        if files:
            done["jobs"] += 1
            done["files"] += len(files)
            done["bytes"] += size
            done["unsized"] += sum(1 for _, n in files if n is None)
            done["names"] += [name for name, _ in files]
        if not dry_run:
            if files:
                adapter.delete_staged(info, [name for name, _ in files])
            ledger.files_deleted(job.id, [name for name, _ in files], size)
    return done


def write_report(reports: list[dict[str, Any]], run_id: str) -> Path | None:
    """The night's retention report as JSON in ``BATCH_AI_REPORT_DIR`` (when set)."""
    folder = os.environ.get("BATCH_AI_REPORT_DIR")
    if not folder:
        return None
    path = Path(folder) / "retention" / f"{run_id.replace(':', '_').replace('+', '_')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(reports, indent=2, default=str))
    return path


def summary(reports: list[dict[str, Any]]) -> str:
    """One line per workload: what went, and the bytes freed."""
    lines = []
    for r in reports:
        files, payloads, audit = r.get("provider_files", {}), r.get("payloads", {}), r.get("audit", {})
        lines.append(
            f"{r['workload']:<20} provider files {files.get('files', 0):>5} ({files.get('jobs', 0)} jobs)  "
            f"payloads {payloads.get('records', 0):>7}  audit rows {audit.get('rows', 0):>7}  "
            f"freed {r['bytes_freed']:>12,} bytes" + ("  (dry run: nothing deleted)" if r["dry_run"] else "")
        )
    return "\n".join(lines)
