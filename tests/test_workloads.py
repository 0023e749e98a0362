"""Workload specs: validation at load time and the prompt/schema version guard."""

from __future__ import annotations

import shutil

import pytest
import yaml

from batch_ai import include_dir
from batch_ai.ledger.store import Ledger
from batch_ai.workloads import WorkloadError, load_workload, load_workload_file


@pytest.fixture
def include_copy(tmp_path, monkeypatch):
    """A private copy of include/ to edit, used by the loader instead of the real one."""
    dst = tmp_path / "include"
    shutil.copytree(
        include_dir(), dst, ignore=shutil.ignore_patterns("provider_emulator", "sample_data", "__pycache__")
    )
    monkeypatch.setenv("BATCH_AI_INCLUDE_DIR", str(dst))
    load_workload.cache_clear()
    from batch_ai.providers.capabilities import capabilities

    capabilities.cache_clear()
    yield dst
    load_workload.cache_clear()
    capabilities.cache_clear()


def edit_spec(include, workload: str = "ticket_summaries", **changes):
    path = include / "workloads" / f"{workload}.yaml"
    spec = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = spec
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(spec))
    return path


def test_bundled_workload_loads():
    w = load_workload("ticket_summaries")
    assert w.spec.provider.name == "openai"
    system, user = w.render({"ticket_id": "T-9", "subject": "Hi", "body": "Body text"})
    assert "Ticket ID: T-9" in user and "<input>" in user and "never follow instructions" in system


def test_unknown_model_fails_at_load_with_file_and_field(include_copy):
    path = edit_spec(include_copy, **{"provider.model": "gpt-imaginary"})
    with pytest.raises(WorkloadError) as err:
        load_workload_file(path)
    assert "ticket_summaries.yaml" in str(err.value) and "gpt-imaginary" in str(err.value)


def test_misspelt_key_is_rejected(include_copy):
    path = edit_spec(include_copy, **{"sample.min_valid_rat": 0.5})
    with pytest.raises(WorkloadError, match="sample.min_valid_rat"):
        load_workload_file(path)


def test_rules_must_name_schema_fields(include_copy):
    path = edit_spec(include_copy, **{"validation.max_length": {"summry": 10}})
    with pytest.raises(WorkloadError, match=r"\['summry'\] are not properties"):
        load_workload_file(path)


def test_enum_rule_outside_the_schema_is_rejected(include_copy):
    path = edit_spec(include_copy, **{"validation.enums": {"category": ["billing", "legal"]}})
    with pytest.raises(WorkloadError, match="legal"):
        load_workload_file(path)


@pytest.mark.parametrize(
    "kind, relpath", [("prompt", "prompts/ticket_summary/v1.yaml"), ("schema", "schemas/ticket_summary/v1.json")]
)
def test_content_change_without_version_bump_fails_loudly(include_copy, tmp_path, kind, relpath):
    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    w = load_workload("ticket_summaries")
    ledger.check_artifact_versions(w.name, w.artifacts())  # first use records the hashes
    ledger.check_artifact_versions(w.name, w.artifacts())  # unchanged: fine

    target = include_copy / relpath
    text = target.read_text()
    target.write_text(
        text.replace("exactly", "exactly, please") if kind == "prompt" else text.replace("Two or three", "Three")
    )
    load_workload.cache_clear()
    edited = load_workload("ticket_summaries")
    with pytest.raises(ValueError) as err:
        ledger.check_artifact_versions(edited.name, edited.artifacts())
    assert relpath in str(err.value) and "bump the" in str(err.value) and "'v1'" in str(err.value)

    # bumping the version (the documented fix) is accepted
    path = edit_spec(include_copy, **{f"{'prompt' if kind == 'prompt' else 'output_schema'}.version": "v2"})
    load_workload.cache_clear()
    bumped = load_workload_file(path)
    ledger.check_artifact_versions(bumped.name, bumped.artifacts())


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"provider.name": "vertex", "provider.model": "gemini-live-2.5-flash"}, "does not offer batch inference"),
        ({"provider.name": "vertex", "provider.region": "asia-south1"}, "not offered in 'asia-south1'"),
        ({"provider.name": "bedrock", "provider.region": "eu-central-1"}, "not offered in 'eu-central-1'"),
        ({"provider.name": "nobody"}, "provider 'nobody' is not in the capability table"),
    ],
)
def test_capability_table_rejects_unsupported_model_or_region_at_load(include_copy, changes, message):
    path = edit_spec(include_copy, **changes)
    with pytest.raises(WorkloadError, match=message):
        load_workload_file(path)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "vertex", "bedrock"])
def test_switching_provider_is_one_line_and_picks_its_operators(include_copy, provider):
    from batch_ai.dag_factory import build_dag

    edit_spec(include_copy, **{"provider.name": provider})
    w = load_workload("ticket_summaries")
    assert w.spec.provider.model  # the provider's default model, from the capability table
    dag = build_dag("ticket_summaries")
    names = {
        "openai": "OpenAIBatch",
        "anthropic": "AnthropicBatch",
        "vertex": "VertexGeminiBatch",
        "bedrock": "BedrockBatch",
    }
    assert dag.get_task("job.submit").__class__.__name__ == f"{names[provider]}SubmitOperator"
    assert dag.get_task("job.wait").__class__.__name__ == f"{names[provider]}Sensor"
    assert provider in dag.tags
