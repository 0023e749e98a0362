"""Time the Airflow common.ai provider's own handling of a finished OpenAI batch's output file.

    bash benchmarks/commonai/setup.sh
    python3 benchmarks/commonai/make_output.py /tmp/out.jsonl 100000
    benchmarks/commonai/.venv/bin/python benchmarks/commonai/measure.py /tmp/out.jsonl 100000

Runs in benchmarks/commonai/.venv (apache-airflow-providers-common-ai). What is timed is
``LLMBatchOperator.execute_complete(context, event)``: the method Airflow calls when the
operator's trigger reports the batch finished, and the provider's one place that fetches,
validates, merges and writes results. Inside it, unchanged: ``build_output_spec``,
``state.read_state`` (the batch's state record on the result path), ``results.stream_results_to_jsonl``
(``OpenAIBatchAdapter.iter_results`` -> ``_parse_result_line`` per line -> ``build_result_row`` ->
``OpenAIBatchAdapter.extract_output`` + ``validate_extracted_output``, i.e. ``json.loads`` of the
answer, Pydantic ``TypeAdapter.validate_python`` and ``dump_python(mode="json")`` -> ``json.dumps``
of the row to a JSONL file through ``ObjectStoragePath.open``) and ``results.assemble_manifest``.

Replaced, and only these: the OpenAI SDK client (``batches.retrieve`` and
``files.with_streaming_response.content(...).iter_lines()``), by one that reads the local file
line by line, as the SDK's streamed download would hand the lines over; and
``dispatch.build_adapter``, which would read an Airflow connection to build that client.
``output_type`` is a Pydantic model equal to include/schemas/ticket_summary/v1.json, so every
answer is validated (the provider validates only through Pydantic, not JSON Schema).

The provider derives each result's index from its custom_id as ``int(custom_id.rsplit("-", 1)[1])``
(it writes ``{key16}-{index}`` at submit), so the project's ``r{n}-a1`` ids are rewritten to
``{key16}-{n}`` in a copy of the file before timing; every other byte is unchanged.
Prints one JSON line on stdout (the operator's own log lines go to stderr).

Where the time goes (100k lines, this machine): about 1 s of the ~2.5 s is Airflow's
``ObjectStoragePath.open`` wrapper, which calls the hook-lineage collector on every ``write`` (one
per row; a ``NoOpCollector`` when no lineage plugin is installed, more with one); the rest is
parsing, Pydantic validation and serialising. A single OpenAI batch holds at most 50,000
requests (the adapter's ``max_requests`` too), so 100k is two batches' worth landed in one call.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Literal

_WORK = Path(tempfile.mkdtemp(prefix="commonai-bench-"))
# Importing Airflow writes a config under AIRFLOW_HOME: keep it in the scratch folder, never ~/airflow
# or the project's .airflow/.
os.environ["AIRFLOW_HOME"] = str(_WORK / "airflow_home")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow.providers.common.ai.batch import dispatch, results, state  # noqa: E402
from airflow.providers.common.ai.batch.openai import OpenAIBatchAdapter  # noqa: E402
from airflow.providers.common.ai.batch.polling import terminal_event  # noqa: E402
from airflow.providers.common.ai.operators.llm_batch import LLMBatchOperator  # noqa: E402
from airflow.providers.common.compat.sdk import ObjectStoragePath  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

PACKAGE = "apache-airflow-providers-common-ai"
BATCH_ID = "batch_benchmark"
MODEL_ID = "openai:gpt-4o-mini"
CONN_ID = "openai_batch"
_OUR_ID = re.compile(r'"custom_id": "r(\d+)-a\d+"')


class TicketSummary(BaseModel):
    """include/schemas/ticket_summary/v1.json as the Pydantic output_type the provider requires."""

    model_config = ConfigDict(extra="forbid")

    ticket_id: str
    summary: Annotated[str, Field(max_length=400)]
    category: Literal["billing", "technical", "account", "shipping", "feedback", "other"]
    sentiment: Literal["positive", "neutral", "negative"]
    language: Annotated[str, Field(pattern=r"^[a-z]{2}$")]
    action_items: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=5)]


class _StreamedFile:
    """What ``client.files.with_streaming_response.content(id)`` yields: ``iter_lines()`` of str, no newlines."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def iter_lines(self):
        with open(self._path, encoding="utf-8") as fh:
            for line in fh:
                yield line.rstrip("\r\n")


class _LocalFileClient:
    """Stands in for ``openai.OpenAI``: the two calls ``OpenAIBatchAdapter`` makes to land results."""

    def __init__(self, output_path: Path, request_count: int) -> None:
        self._output_path = output_path
        counts = SimpleNamespace(total=request_count, completed=request_count, failed=0)
        self._batch = SimpleNamespace(
            id=BATCH_ID,
            status="completed",
            output_file_id="file-output",
            error_file_id=None,
            request_counts=counts,
            errors=None,
        )
        self.batches = SimpleNamespace(retrieve=self._retrieve)
        self.files = SimpleNamespace(with_streaming_response=SimpleNamespace(content=self._content))

    def _retrieve(self, batch_id: str):
        assert batch_id == BATCH_ID, batch_id
        return self._batch

    @contextlib.contextmanager
    def _content(self, file_id: str):
        assert file_id == "file-output", file_id
        yield _StreamedFile(self._output_path)

    def close(self) -> None:
        pass


def _rewrite_ids(src: Path, dst: Path, key16: str, request_count: int) -> int:
    """Copy src with ``r{n}-a1`` custom ids as ``{key16}-{n}``, the form the provider parses; return lines."""
    lines = 0
    with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8", newline="\n") as fout:
        for line in fin:
            new, hits = _OUR_ID.subn(lambda m: f'"custom_id": "{key16}-{m.group(1)}"', line, count=1)
            if hits != 1:
                raise SystemExit(f"line {lines + 1} of {src} has no r<n>-a<k> custom_id")
            fout.write(new)
            lines += 1
    if lines != request_count:
        print(f"note: {src} has {lines} lines for {request_count} requests", file=sys.stderr)
    return lines


def _one_run(run: int, output_path: Path, request_count: int, ti: SimpleNamespace, key: str) -> dict:
    result_path = f"file://{_WORK}/results-{run}"
    result_osp = ObjectStoragePath(result_path)
    # What execute() recorded at submit time; _land reads it back (inside the timed call).
    state.write_submitted(
        result_osp,
        key=key,
        input_fingerprint="0" * 64,
        output_schema_digest="0" * 64,
        intent_at="2026-11-25T00:00:00+00:00",
        adapter="openai",
        llm_conn_id=CONN_ID,
        model_id=MODEL_ID,
        output_type_ref=f"{__name__}.TicketSummary",
        batch_id=BATCH_ID,
        provider_input_ref="file-input",
        request_count=request_count,
        submitted_at="2026-11-25T00:00:01+00:00",
    )

    def build_adapter(name: str, *, llm_conn_id: str) -> OpenAIBatchAdapter:
        assert (name, llm_conn_id) == ("openai", CONN_ID)
        return OpenAIBatchAdapter(client=_LocalFileClient(output_path, request_count))

    # The event the trigger would fire, from the adapter's own get_batch (not timed).
    event = terminal_event(BATCH_ID, build_adapter("openai", llm_conn_id=CONN_ID).get_batch(BATCH_ID))
    operator = LLMBatchOperator(
        task_id=ti.task_id,
        requests=["unused after submit"],
        result_path=result_path,
        llm_conn_id=CONN_ID,
        model_id=MODEL_ID,
        output_type=TicketSummary,
    )

    merge_seconds = []
    real_stream = results.stream_results_to_jsonl

    def timed_stream(**kwargs):
        t = time.perf_counter()
        try:
            return real_stream(**kwargs)
        finally:
            merge_seconds.append(time.perf_counter() - t)

    real_build_adapter = dispatch.build_adapter
    dispatch.build_adapter = build_adapter
    results.stream_results_to_jsonl = timed_stream
    try:
        t0 = time.perf_counter()
        manifest = operator.execute_complete({"task_instance": ti}, event)
        seconds = time.perf_counter() - t0
    finally:
        dispatch.build_adapter = real_build_adapter
        results.stream_results_to_jsonl = real_stream

    result_file = Path(manifest["result_uri"].removeprefix("file://"))
    rows = 0
    with open(result_file, encoding="utf-8") as fh:
        for line in fh:
            rows += 1
            if rows == 1:
                first = json.loads(line)
    shutil.rmtree(_WORK / f"results-{run}", ignore_errors=True)
    return {
        "seconds": seconds,
        "merge_seconds": merge_seconds[0],
        "counts": manifest["counts"],
        "rows": rows,
        "first_row": first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output_file", type=Path, help="OpenAI batch output JSONL (custom ids r<n>-a1)")
    parser.add_argument("requests", type=int, help="number of requests in the batch")
    parser.add_argument("--runs", type=int, default=5, help="timed runs; the median is reported (default 5)")
    args = parser.parse_args()

    try:
        ti = SimpleNamespace(dag_id="ticket_summary", task_id="collect", run_id="benchmark", map_index=-1)
        key, key16 = LLMBatchOperator._identity({"task_instance": ti})
        local = _WORK / "output.jsonl"
        lines = _rewrite_ids(args.output_file, local, key16, args.requests)

        # The operator logs "Landed N results ..." to stdout; send it to stderr so stdout is one line.
        sys.stdout.flush()
        saved_stdout = os.dup(1)
        os.dup2(2, 1)
        try:
            runs = [_one_run(i, local, args.requests, ti, key) for i in range(args.runs)]
        finally:
            sys.stdout.flush()
            os.dup2(saved_stdout, 1)
            os.close(saved_stdout)
        for r in runs:
            if r["rows"] != args.requests or r["counts"]["succeeded"] != min(lines, args.requests):
                raise SystemExit(f"unexpected result: {r['rows']} rows, counts {r['counts']}")
        seconds = statistics.median(r["seconds"] for r in runs)
        print(
            json.dumps(
                {
                    "records": args.requests,
                    "seconds": round(seconds, 3),
                    "records_per_second": round(args.requests / seconds),
                    "package": PACKAGE,
                    "version": importlib.metadata.version(PACKAGE),
                    "what": (
                        "LLMBatchOperator.execute_complete on a finished OpenAI batch: state.read_state, "
                        "then results.stream_results_to_jsonl (OpenAIBatchAdapter.iter_results/"
                        "_parse_result_line, extract_output, validate_extracted_output against a Pydantic "
                        "ticket_summary model, json.dumps of each row to a local ObjectStoragePath JSONL) "
                        "and results.assemble_manifest; only the OpenAI SDK download is replaced by "
                        "reading the local file"
                    ),
                    "merge_seconds": round(statistics.median(r["merge_seconds"] for r in runs), 3),
                    "runs_seconds": [round(r["seconds"], 3) for r in runs],
                    "counts": runs[0]["counts"],
                    "input_bytes": args.output_file.stat().st_size,
                    "python": sys.version.split()[0],
                    "apache_airflow": importlib.metadata.version("apache-airflow"),
                    "pydantic": importlib.metadata.version("pydantic"),
                }
            )
        )
    finally:
        shutil.rmtree(_WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
