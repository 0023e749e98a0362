"""Run one stage of a night on a prepared ledger, in a process of its own, and print one JSON line:
how many records, how long, and the process's peak RSS. ``bench.py`` calls it once per stage.

    python benchmarks/stage.py {extract,plan,submit,collect,gate,publish} --ledger URL --day D --out DIR
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "include"), str(REPO / "benchmarks")]

from batch_ai.ledger.states import JobState, State  # noqa: E402
from batch_ai.ledger.store import Ledger  # noqa: E402
from batch_ai.stages.run import ACTOR, RunInfo  # noqa: E402
from batch_ai.workloads import load_workload  # noqa: E402

RUN_ID = "bench"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def extract(workload, ledger, run, out: Path) -> int:
    from batch_ai.stages import intake

    return intake.extract(workload, ledger, run)["rows"]


def plan(workload, ledger, run, out: Path) -> int:
    from batch_ai.providers import adapter_for
    from batch_ai.stages import plan as planning

    tokens = planning.plan(workload, ledger, adapter_for(workload), run)
    return sum(ledger.job(token).record_count for token in tokens)


def submit(workload, ledger, run, out: Path) -> int:
    from batch_ai.providers import adapter_for
    from batch_ai.stages import submit as submitting

    adapter = adapter_for(workload)
    tokens = ledger.open_tokens(workload.name, run.run_id)
    for token in tokens:
        submitting.submit(workload, ledger, adapter, token, run)
    return sum(ledger.job(token).record_count for token in tokens)


def collect(workload, ledger, run, out: Path) -> int:
    """Collect every submitted job from its output file (bench.py wrote one per job): parse,
    match, validate and move every record, as ``collect`` does after the download."""
    from batch_ai.providers.base import JobInfo, JobStatus, split_jsonl
    from batch_ai.providers.openai import OpenAIBatchProvider
    from batch_ai.stages.collect import apply_results

    count = 0
    for token in ledger.open_tokens(workload.name, run.run_id):
        job = ledger.job(token)
        info = JobInfo(job.provider_job_id, JobStatus.COMPLETED, "completed", {"total": job.record_count})
        path = out / f"{token}.output.jsonl"
        with open(path, "rb") as fh:
            chunks = iter(lambda: fh.read(1 << 20), b"")
            lines = (
                OpenAIBatchProvider._parse_line(line, path.name, n) for n, line in enumerate(split_jsonl(chunks), 1)
            )
            tally = apply_results(workload, ledger, job, lines, info, run, discount=0.5)
        ledger.finish_job(job.id, JobState.COMPLETED, {})
        count += sum(tally.get(str(s), 0) for s in State)
    return count


def gate(workload, ledger, run, out: Path) -> int:
    from batch_ai.stages import gate as gating

    verdict = gating.gate(workload, ledger, run)
    assert verdict.success, verdict.describe()
    return ledger.run_details(workload.name, run.run_id)["gate"]["records_ready"]


def publish(workload, ledger, run, out: Path) -> int:
    from batch_ai.publish import publish as publishing

    return publishing(workload, ledger, run.run_id, ACTOR, gated_by=run.run_id)["published"]


#: the database drivers' own calls: time spent in them is the database's work (and the round trips)
DRIVER_CALLS = ("psycopg2.extensions.cursor", "psycopg2.extensions.connection", "sqlite3.Cursor", "sqlite3.Connection")


def profile_summary(profiler, path: Path, top: int = 8) -> dict:
    """Write the profile's top functions by own time to ``path``; return the time spent inside the
    database driver's calls and the top entries (for the benchmark's "why" of a missed goal)."""
    import io
    import pstats

    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(20)
    path.write_text(text.getvalue())
    entries = [(pstats.func_std_string(func), value[2]) for func, value in stats.stats.items()]
    db = sum(own for name, own in entries if any(call in name for call in DRIVER_CALLS))
    entries.sort(key=lambda e: e[1], reverse=True)
    return {
        "profiled_s": round(stats.total_tt, 3),
        "db_s": round(db, 3),
        "top": [[_short(name), round(own, 3)] for name, own in entries[:top]],
    }


def _short(name: str) -> str:
    """A profile entry without this machine's paths."""
    for marker in ("site-packages/", "/plugins/"):
        if marker in name:
            return name.split(marker, 1)[1]
    return re.sub(r"^.*/python3\.\d+/", "", name)


STAGES = {f.__name__: f for f in (extract, plan, submit, collect, gate, publish)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--day", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--profile", type=Path, help="write the stage's top functions (cProfile, by own time) here")
    args = parser.parse_args()
    workload = load_workload("ticket_summaries")
    ledger = Ledger.connect(args.ledger)
    run = RunInfo(run_id=RUN_ID, ds=args.day)
    before = peak_rss_mb()
    started = time.perf_counter()
    extra = {}
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        records = profiler.runcall(STAGES[args.stage], workload, ledger, run, args.out)
        seconds = time.perf_counter() - started
        extra = profile_summary(profiler, args.profile)
    else:
        records = STAGES[args.stage](workload, ledger, run, args.out)
        seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "stage": args.stage,
                "records": records,
                "seconds": round(seconds, 3),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "rss_at_start_mb": round(before, 1),
                **extra,
            }
        )
    )


if __name__ == "__main__":
    main()
