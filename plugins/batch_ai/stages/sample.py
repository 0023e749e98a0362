"""The ``sample`` task: a few queued records through the real-time API, validated like batch
output, and the run stopped before any batch spend if they look wrong or cost too much."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from typing import Any

from batch_ai.errors import StageError
from batch_ai.ledger.states import State
from batch_ai.ledger.store import Ledger
from batch_ai.providers import BatchProvider
from batch_ai.providers.capabilities import capabilities
from batch_ai.stages.run import RunInfo
from batch_ai.validation.records import OutputValidator
from batch_ai.workloads import Workload

log = logging.getLogger(__name__)


def sample(workload: Workload, ledger: Ledger, adapter: BatchProvider, run: RunInfo) -> dict[str, Any]:
    """Run a few queued records in real time; stop before any batch spend if they look wrong."""
    size = workload.spec.sample.size
    # the same records for the same run, read without holding the night's records in memory
    queued, picked = ledger.pick_records(
        workload.record_key(), State.QUEUED, lambda n: random.Random(run.run_id).sample(range(n), min(size, n))
    )
    if not queued or size == 0:
        log.info("sample: nothing to sample (%d queued)", queued)
        return {"size": 0, "queued": queued}
    prompts = {}
    for rec in picked:
        try:
            prompts[rec.id] = workload.prompt_for(rec.input)
        except Exception as exc:  # noqa: BLE001 - one row's problem: the plan sends it to review
            log.warning("sample %s: the prompt template fails on it (%s); not sampled", rec.source_id, exc)
    picked = [rec for rec in picked if rec.id in prompts]
    if not picked:
        return {"size": 0, "queued": queued}
    tally = _call(workload, adapter, picked, prompts)
    summary = _summarize(workload, run, tally, len(picked), queued)
    ledger.set_run_detail(workload.name, run.run_id, "sample", summary)
    log.info("sample %s: %s", workload.name, json.dumps(summary))
    _judge(workload, summary)
    return summary


def _call(workload: Workload, adapter: BatchProvider, picked, prompts) -> Counter:
    """The real-time calls, tallied: valid, invalid, refused, error, tokens."""
    validator = OutputValidator.for_workload(workload)
    options = workload.request_options()
    tally: Counter = Counter()
    for rec in picked:
        result = adapter.realtime(f"sample-{rec.id}", prompts[rec.id], options)
        tally["input_tokens"] += result.input_tokens
        tally["output_tokens"] += result.output_tokens
        tally["max_input_tokens"] = max(tally["max_input_tokens"], result.input_tokens)
        if result.refusal:
            tally["refused"] += 1
            log.info("sample %s: refused: %s", rec.source_id, result.refusal)
        elif not result.answered:
            tally["error"] += 1
            log.info("sample %s: %s: %s", rec.source_id, result.error_kind, result.error_message)
        else:
            verdict = validator.check(result, rec.source_id, rec.input)
            tally["valid" if verdict.ok else "invalid"] += 1
            log.info("sample %s: %s", rec.source_id, "valid" if verdict.ok else "; ".join(verdict.errors))
    return tally


def _summarize(workload: Workload, run: RunInfo, tally: Counter, n: int, queued: int) -> dict[str, Any]:
    caps = capabilities()
    pcaps = caps.provider(workload.spec.provider.name)
    price = pcaps.price(workload.spec.provider.model)
    to_submit = min(queued, run.params.record_limit or queued)
    tokens_in, tokens_out = tally["input_tokens"], tally["output_tokens"]
    forecast = price.cost(tokens_in, tokens_out, pcaps.batch_discount) / n * to_submit
    return {
        "size": n,
        "queued": queued,
        "to_submit": to_submit,
        "valid_rate": round(tally["valid"] / n, 3),
        "refusal_rate": round(tally["refused"] / n, 3),
        "max_input_tokens": tally["max_input_tokens"],
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "cost_usd": round(price.cost(tokens_in, tokens_out), 6),
        "batch_forecast_usd": round(forecast, 6),
        "prices_as_of": caps.prices_as_of,
        "budget_usd": workload.spec.budget.max_batch_usd,
    }


def _judge(workload: Workload, summary: dict[str, Any]) -> None:
    """Stop the run (before any batch spend) over the budget or past a sample threshold."""
    cfg, budget, n = workload.spec.sample, summary["budget_usd"], summary["size"]
    forecast = summary["batch_forecast_usd"]
    if budget is not None and forecast > budget:
        raise StageError(
            f"the batch cost forecast ${forecast:.4f} for {summary['to_submit']} record(s) (from a sample of {n}, "
            f"prices as of {summary['prices_as_of']}) is over the budget of ${budget:.4f} in {workload.path.name}; "
            f"nothing was submitted. Raise budget.max_batch_usd, or run part of the work with the record_limit param."
        )
    problems = []
    if summary["valid_rate"] < cfg.min_valid_rate:
        problems.append(f"schema-valid rate {summary['valid_rate']:.0%} is below {cfg.min_valid_rate:.0%}")
    if summary["refusal_rate"] > cfg.max_refusal_rate:
        problems.append(f"refusal rate {summary['refusal_rate']:.0%} is above {cfg.max_refusal_rate:.0%}")
    if summary["max_input_tokens"] > cfg.max_input_tokens:
        problems.append(f"a request took {summary['max_input_tokens']} input tokens, over {cfg.max_input_tokens}")
    if problems:
        raise StageError(
            f"sample of {n} records failed, nothing was submitted: {'; '.join(problems)}. "
            f"Check the prompt ({workload.spec.prompt.file}) and schema, or adjust sample thresholds in "
            f"{workload.path.name}."
        )
