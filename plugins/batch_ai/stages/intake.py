"""The ``extract`` task: read the run's source file(s), account for every row, queue the work.

A dry run does the same intake in a transaction that is rolled back, and forecasts what the
run would submit and cost without calling any provider.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Iterator
from typing import Any

from batch_ai.errors import StageError
from batch_ai.ledger.store import IntakeRow, Ledger
from batch_ai.providers import BatchProvider
from batch_ai.providers.base import request_size
from batch_ai.providers.capabilities import capabilities
from batch_ai.stages.plan import group_requests
from batch_ai.stages.rows import RowChecker
from batch_ai.stages.rows import lines as source_lines
from batch_ai.stages.run import ACTOR, RunInfo
from batch_ai.stages.submit import custom_id
from batch_ai.workloads import Workload

log = logging.getLogger(__name__)


def parse_row(workload: Workload, number: int, line: bytes | str, where: str | None = None) -> IntakeRow:
    """Check one source line; a bad one becomes a dead letter that names the row and the problem."""
    return RowChecker(workload.spec.source).parse(number, line, where)


class SourceRows:
    """The rows of a run's source file(s), streamed and numbered across files in date order;
    ``count`` and ``uris`` say how many rows and which files were read so far. A dead letter is
    logged as it is read."""

    def __init__(self, workload: Workload, run: RunInfo):
        self.workload, self.run = workload, run
        self.count = 0
        self.uris: list[str] = []

    def files(self):
        """``(day, path)`` of each source file, every one checked to exist before any is read."""
        from airflow.sdk import ObjectStoragePath

        nightly = self.run.params.date_from is None
        found = []
        for day in self.run.params.days(self.run.ds):
            ds = day.isoformat()
            uri = self.workload.source_uri(
                ds=ds,
                data_interval_start=self.run.data_interval_start if nightly else None,
                data_interval_end=self.run.data_interval_end if nightly else None,
            )
            path = ObjectStoragePath(uri)
            if not path.exists():
                raise StageError(
                    f"source file {uri} for {ds} does not exist. If there was nothing to process that day, "
                    f"write an empty file; a missing export is treated as an error so it is noticed."
                )
            found.append((day, uri, path))
        return found

    def __iter__(self) -> Iterator[IntakeRow]:
        checker = RowChecker(self.workload.spec.source)
        for day, uri, path in self.files():
            self.uris.append(uri)
            with path.open("rb") as fh:
                # the file's name and line (the full URI is in the extract log)
                for row in checker.parse_lines(source_lines(fh), path.name, self.count + 1):
                    row.source_date = day
                    self.count += 1
                    if row.malformed:
                        log.warning("dead letter: %s", row.malformed)
                    yield row


def extract(workload: Workload, ledger: Ledger, run: RunInfo) -> dict[str, Any]:
    """Read the run's source file(s), account for every row in the ledger, queue the work.

    A backfill (``rerun_states``) also sends the selected records of those rows round again;
    with a new prompt or schema version, only those (see :meth:`Ledger.intake`). The rows are
    streamed into the ledger in one transaction: a failed extract leaves nothing behind.
    """
    from batch_ai.publish import mark_pending

    ledger.check_artifact_versions(workload.name, workload.artifacts())
    rows = SourceRows(workload, run)
    rows.files()  # a missing file fails the task before anything is written
    ledger.start_run(workload.name, run.run_id, run.data_interval_start, run.data_interval_end)
    key = workload.record_key()
    outcome = ledger.intake(
        key,
        workload.spec.provider.name,
        run.run_id,
        rows,
        actor=ACTOR,
        rerun=run.params.rerun_states,
        version_override=run.params.overrides_versions,
    )
    ledger.set_extracted(workload.name, run.run_id, rows.count)
    if outcome["invalid_same_version"]:
        log.warning(
            "%d invalid output(s) not rerun: the prompt and schema versions are the ones they failed with; "
            "rerun them with a new prompt_version or schema_version",
            outcome["invalid_same_version"],
        )
    pending = mark_pending(workload, ledger, key)
    uris = rows.uris
    summary = {"source": uris if len(uris) > 1 else uris[0], "rows": rows.count, **outcome, "pending_in_sink": pending}
    log.info("extract %s: %s", workload.name, json.dumps(summary, default=str))
    return summary


def estimate_tokens(text: str) -> int:
    """A rough token count (four characters a token) for forecasts before anything is sent."""
    return max(1, math.ceil(len(text) / 4))


def dry_run(workload: Workload, ledger: Ledger, adapter: BatchProvider, run: RunInfo) -> dict[str, Any]:
    """What the run would submit and what it would cost, changing nothing: the intake is done in
    a transaction that is rolled back, and no provider is called."""
    rows = SourceRows(workload, run)
    options = workload.request_options()

    def measure(queued) -> tuple[list[int], int]:
        sizes, tokens_in = [], 0
        for rec in itertools.islice(queued, run.params.record_limit):
            prompt = workload.prompt_for(rec.input)
            sizes.append(request_size(adapter.build_request(custom_id(rec.id, rec.attempts), prompt, options)))
            tokens_in += estimate_tokens(prompt.system) + estimate_tokens(prompt.user)
        return sizes, tokens_in

    outcome, (sizes, tokens_in) = ledger.preview_intake(
        workload.record_key(),
        workload.spec.provider.name,
        run.run_id,
        rows,
        measure,
        rerun=run.params.rerun_states,
        version_override=run.params.overrides_versions,
    )
    uris, queued = rows.uris, len(sizes)
    mean_out = ledger.mean_output_tokens(workload.name)
    tokens_out = round((mean_out if mean_out is not None else workload.spec.provider.max_output_tokens) * queued)
    caps = capabilities()
    pcaps = caps.provider(workload.spec.provider.name)
    price = pcaps.price(workload.spec.provider.model)
    grouping = group_requests(workload, sizes)  # as the plan will group them
    discount, jobs, below = pcaps.batch_discount, len(grouping.groups), grouping.below
    if grouping.held:
        below += ": held for a later run"
        queued, tokens_in, tokens_out, jobs = 0, 0, 0, 0
    elif grouping.realtime:
        below += ": real-time calls at the full price"
        discount, jobs = 1.0, 0
    summary = {
        "dry_run": True,
        "source": uris,
        "rows": rows.count,
        "intake": dict(outcome),
        "would_submit": queued,
        "jobs": jobs,
        "prompt_version": workload.spec.prompt.version,
        "schema_version": workload.spec.output_schema.version,
        "estimated_input_tokens": tokens_in,
        "estimated_output_tokens": tokens_out,
        "output_tokens_basis": "mean of earlier results" if mean_out is not None else "max_output_tokens (upper bound)",
        "below_minimum": below,
        "batch_cost_usd": round(price.cost(tokens_in, tokens_out, discount), 6),
        "realtime_cost_usd": round(price.cost(tokens_in, tokens_out), 6),
        "prices_as_of": caps.prices_as_of,
    }
    ledger.start_run(workload.name, run.run_id, run.data_interval_start, run.data_interval_end)
    ledger.set_run_detail(workload.name, run.run_id, "dry_run", summary)
    log.info("dry run %s, nothing submitted: %s", workload.name, json.dumps(summary, default=str))
    return summary
