"""Workload specs: the YAML a user writes, as pydantic models checked field by field.

A mistake fails at DAG parse time with the file and field named, not after money was spent.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from batch_ai.providers.capabilities import capabilities

_NAME = r"^[a-z][a-z0-9_]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


FieldType = Literal["string", "integer", "number", "boolean", "array", "object", "any"]


class SourceSpec(_Strict):
    kind: Literal["jsonl_file"] = "jsonl_file"
    #: Airflow object-storage URI; ``{ds}``, ``{ds_nodash}``, ``{data_interval_start}`` and
    #: ``{data_interval_end}`` are filled per run, ``${VAR}`` from the environment.
    uri: str
    id_field: str
    #: What a source id looks like (a regular expression it must match in full), e.g. ``T-[0-9]+``.
    #: Rows whose id does not match are dead letters; outputs that mention another id matching it
    #: go to review (``validation.foreign_ids``).
    id_pattern: str | None = None
    #: The fields of a row and their JSON types. The prompt may use only these; a row whose field
    #: has another type is a dead letter. Undeclared fields are kept but not type-checked.
    fields: dict[str, FieldType] = Field(default_factory=dict)
    required_fields: list[str] = Field(default_factory=list)
    #: Limits on a whole row as JSON (every field, at any depth): characters and UTF-8 bytes.
    max_text_chars: int = Field(50_000, gt=0)
    max_input_bytes: int = Field(200_000, gt=0)

    @field_validator("id_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"id_pattern {value!r} is not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _declared(self) -> SourceSpec:
        if self.fields:
            undeclared = [f for f in [self.id_field, *self.required_fields] if f not in self.fields]
            if undeclared:
                raise ValueError(f"fields {undeclared} are used (id_field, required_fields) but not declared in fields")
        return self

    def declared_fields(self) -> dict[str, str]:
        """The declared fields, or, where none are, the id and required fields."""
        return dict(self.fields) or {name: "any" for name in dict.fromkeys([self.id_field, *self.required_fields])}

    def id_regex(self) -> re.Pattern | None:
        """``id_pattern`` as it is found inside text (not part of a longer word or id)."""
        if self.id_pattern is None:
            return None
        return re.compile(rf"(?<![\w-])(?:{self.id_pattern})(?![\w-])")


class VersionedFile(_Strict):
    file: str  # relative to include/
    version: str = Field(pattern=r"^[A-Za-z0-9._-]{1,50}$")


class ProviderSpec(_Strict):
    name: str
    #: What each request asks: a chat completion, a Responses API response (both answer the
    #: output schema), or an embedding of the rendered ``input`` (providers that offer it in batch).
    endpoint: Literal["chat", "responses", "embeddings"] = "chat"
    model: str | None = None  # default: the provider's default (embedding) model in the capability table
    #: Embeddings: the vector's length (default: the model's, from the capability table).
    dimensions: int | None = Field(None, gt=0)
    conn_id: str | None = None  # default: the provider's usual Airflow connection id
    #: Vertex AI location or AWS region (default from the capability table).
    region: str | None = None
    #: Where job files are staged: gs://bucket/prefix (Vertex) or s3://bucket/prefix (Bedrock).
    #: Default: the connection's ``batch_ai_staging_uri`` extra.
    staging_uri: str | None = Field(None, pattern=r"^(gs|s3)://[^/]+(/.*)?$")
    #: Bedrock's service role for batch jobs. Default: the connection's ``batch_ai_role_arn`` extra.
    role_arn: str | None = None
    #: Records too few for the provider's minimum job size (Bedrock): keep them queued for a
    #: later run ("hold") or send them through real-time calls ("realtime").
    below_minimum: Literal["hold", "realtime"] = "hold"
    max_output_tokens: int = Field(512, gt=0)
    temperature: float = 0.0
    poll_interval_seconds: float = Field(60.0, gt=0)
    max_poll_interval_seconds: float = Field(600.0, gt=0)
    wait_timeout_hours: float = Field(26.0, gt=0)
    delete_files_after_collect: bool = True


class SampleSpec(_Strict):
    size: int = Field(5, ge=0)
    min_valid_rate: float = Field(0.8, ge=0, le=1)
    max_refusal_rate: float = Field(0.2, ge=0, le=1)
    max_input_tokens: int = Field(8000, gt=0)


class SpanRule(_Strict):
    """Output ``field`` is a list of ``{start, end[, text]}`` offsets into the input's
    ``source_field``; each must lie inside it (and quote it exactly, when it quotes)."""

    field: str
    source_field: str


class ValidationSpec(_Strict):
    required: list[str] = Field(default_factory=list)
    enums: dict[str, list[str]] = Field(default_factory=dict)
    max_length: dict[str, int] = Field(default_factory=dict)
    #: No string of the output, at any depth, may hold HTML, a script URL, an event handler, or
    #: a markdown image or outside link (:mod:`batch_ai.validation.safety`).
    no_html: bool = True
    #: Hosts a markdown link in an output may point at (none by default).
    allowed_link_hosts: list[str] = Field(default_factory=list)
    echo_id_field: str | None = None
    #: An output that mentions another record's source id (``source.id_pattern``), as a prompt
    #: injection asks ("copy the answer of T-2"): to a person (``review``), ``invalid``, or ``ignore``.
    foreign_ids: Literal["review", "invalid", "ignore"] = "review"
    spans: list[SpanRule] = Field(default_factory=list)


class BatchingSpec(_Strict):
    """Optional limits below the provider's own (the capability table)."""

    max_requests_per_job: int | None = Field(None, gt=0)
    max_bytes_per_job: int | None = Field(None, gt=0)


class RetrySpec(_Strict):
    """Transient provider errors are resubmitted in up to ``rounds`` rounds within a run, each
    after a back-off; past ``max_attempts`` (or on a non-transient error) a record goes to review."""

    max_attempts: int = Field(3, ge=1)
    rounds: int = Field(2, ge=0, le=5)
    backoff_seconds: float = Field(300.0, ge=0)
    backoff_factor: float = Field(2.0, ge=1)


class QualityGateSpec(_Strict):
    """The great-expectations gate before publish (its other checks come from ``validation``)."""

    max_invalid_rate: float = Field(0.2, ge=0, le=1)
    #: Ask a person to approve each publish (Airflow's human-in-the-loop approval task),
    #: showing the counts and a sample; without an answer in time, nothing is published.
    human_approval: bool = False
    approval_timeout_hours: float = Field(12.0, gt=0)


class BudgetSpec(_Strict):
    """The sample step forecasts the run's batch cost; over ``max_batch_usd`` the run stops
    before anything is submitted."""

    max_batch_usd: float | None = Field(None, gt=0)


class CostSpec(_Strict):
    """What a night costs beyond the provider's bill, for the report's true cost: a person's time
    for each record sent to review (files kept at the provider are priced for as long as
    ``retention.provider_files_days`` keeps them). The defaults are assumptions to replace with
    your own figures."""

    review_minutes: float = Field(3.0, ge=0)  # a person's time per record sent to review
    reviewer_hourly_usd: float = Field(40.0, ge=0)  # what an hour of that person's time costs


class DeadlineSpec(_Strict):
    """When the results are needed: ``hours`` after the run was queued (for a nightly run, just
    after its data interval ends). A miss fires Airflow's deadline alert; with ``on_miss:
    realtime`` the records still in a batch job are sent through real-time calls (at most
    ``realtime_per_minute``) and the batch job is cancelled."""

    hours: float = Field(gt=0)
    on_miss: Literal["alert", "realtime"] = "alert"
    realtime_per_minute: float = Field(60.0, gt=0)


class ReviewRule(_Strict):
    """A valid output goes to a person when its ``field`` matches the rule."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str
    below: float | None = None
    above: float | None = None
    equals: Any = None
    in_: list[Any] | None = Field(None, alias="in")
    not_empty: bool = False  # a list, object or string with something in it
    reason: str | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> ReviewRule:
        given = [n for n in ("below", "above", "equals", "in_") if getattr(self, n) is not None] + (
            ["not_empty"] if self.not_empty else []
        )
        if len(given) != 1:
            raise ValueError(f"review rule on {self.field!r} needs exactly one of below, above, equals, in, not_empty")
        return self

    def matches(self, output: dict[str, Any]) -> str | None:
        """Why ``output`` needs review under this rule, or ``None``."""
        value = output.get(self.field)
        hit = False
        if self.below is not None or self.above is not None:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                hit = (self.below is not None and value < self.below) or (self.above is not None and value > self.above)
        elif self.in_ is not None:
            hit = value in self.in_
        elif self.not_empty:
            hit = bool(value)
        else:
            hit = value == self.equals
        if not hit:
            return None
        return self.reason or f"{self.field} is {json.dumps(value, ensure_ascii=False)[:80]}"


class ReviewSpec(_Strict):
    """Which records wait for a person in ``review_required`` before they can be published."""

    refusals: bool = True  # a refused answer goes to review (else it stays invalid_output)
    #: Share of valid outputs picked at random (reproducibly, by record) for a spot check.
    sample_rate: float = Field(0.0, ge=0, le=1)
    rules: list[ReviewRule] = Field(default_factory=list)


class TargetSpec(_Strict):
    """One provider/model pair an evaluation runs the prompt set through."""

    provider: str
    model: str

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_]+", "_", f"{self.provider}__{self.model}").strip("_")[:200]

    def provider_spec(self, base: ProviderSpec) -> ProviderSpec:
        """The workload's provider settings for this target (its own connection, region, model)."""
        caps = capabilities().provider(self.provider)
        keep = base.model_dump(exclude={"name", "model", "conn_id", "region", "staging_uri", "role_arn"})
        return ProviderSpec(**keep, name=self.provider, model=self.model, region=caps.default_region)


class EvaluationSpec(_Strict):
    """A model evaluation: the same labelled prompt set through each target in one run, scored
    against the labels (``label_field`` of the input against ``output_field`` of the answer)."""

    targets: list[TargetSpec] = Field(min_length=1)
    label_field: str
    output_field: str


class SinkSpec(_Strict):
    """Where published records go: a table in the ledger database (``sql_table``) or files on
    Airflow object storage (``files``: one Parquet or JSONL file per publish)."""

    kind: Literal["sql_table", "files"] = "sql_table"
    table: str | None = Field(None, pattern=_NAME)
    uri: str | None = None  # files: a directory URI (file://, s3://, gs://); ${VAR} from the environment
    format: Literal["parquet", "jsonl"] = "jsonl"
    key: str  # column holding the source id
    columns: list[str]  # output fields copied into the table

    @model_validator(mode="after")
    def _target(self) -> SinkSpec:
        if self.kind == "sql_table" and not self.table:
            raise ValueError("a sql_table sink needs `table`")
        if self.kind == "files" and not self.uri:
            raise ValueError("a files sink needs `uri` (a directory on Airflow object storage)")
        return self

    @property
    def name(self) -> str:
        return self.table or self.uri.rstrip("/").rsplit("/", 1)[-1]


class RetentionSpec(_Strict):
    """How long what a night leaves behind is kept, in days (``null``: for ever). The defaults
    are these, for every workload that does not say. Nothing of a record that is not published or
    decided (rejected, dead letter) is ever pruned; the ``batch_ai_retention`` DAG applies it."""

    provider_files_days: int | None = Field(7, ge=0)  # staged input and result files at the provider
    payload_days: int | None = Field(90, ge=0)  # a record's input and output in the ledger (kept: their hashes)
    audit_days: int | None = Field(400, ge=0)  # the audit rows of records published or decided


class WorkloadSpec(_Strict):
    name: str = Field(pattern=_NAME)
    description: str = ""
    schedule: str | None = None
    start_date: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    tags: list[str] = Field(default_factory=list)
    source: SourceSpec
    prompt: VersionedFile
    output_schema: VersionedFile
    provider: ProviderSpec
    sample: SampleSpec = SampleSpec()
    validation: ValidationSpec = ValidationSpec()
    batching: BatchingSpec = BatchingSpec()
    retry: RetrySpec = RetrySpec()
    quality_gate: QualityGateSpec = QualityGateSpec()
    review: ReviewSpec = ReviewSpec()
    budget: BudgetSpec = BudgetSpec()
    cost: CostSpec = CostSpec()
    deadline: DeadlineSpec | None = None
    evaluation: EvaluationSpec | None = None
    retention: RetentionSpec = RetentionSpec()
    sink: SinkSpec

    @field_validator("start_date")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return v if v.tzinfo else v.replace(tzinfo=UTC)

    @model_validator(mode="after")
    def _targets_offer_batch(self) -> WorkloadSpec:
        if self.evaluation:
            keys = [t.key for t in self.evaluation.targets]
            if len(set(keys)) != len(keys):
                raise ValueError(f"evaluation.targets has a pair twice: {keys}")
            for t in self.evaluation.targets:
                caps = capabilities().provider(t.provider)
                capabilities().check_batch_model(t.provider, t.model, caps.default_region)
        return self

    @model_validator(mode="after")
    def _budget_needs_a_sample(self) -> WorkloadSpec:
        if self.budget.max_batch_usd is not None and self.sample.size == 0:
            raise ValueError("budget.max_batch_usd needs sample.size > 0: the forecast comes from the sample")
        return self

    @model_validator(mode="after")
    def _provider_supports_batch(self) -> WorkloadSpec:
        p = self.provider
        caps = capabilities().provider(p.name)
        filled = p.model_copy(
            update={"model": p.model or caps.default_model_for(p.endpoint), "region": p.region or caps.default_region}
        )
        capabilities().check_endpoint(filled.name, filled.endpoint, filled.model)
        capabilities().check_batch_model(filled.name, filled.model, filled.region)
        if filled.endpoint == "embeddings":
            default, largest = caps.embedding_dimensions(filled.model)
            if filled.dimensions is not None and filled.dimensions > largest:
                raise ValueError(f"provider.dimensions {filled.dimensions} is over the {largest} of {filled.model}")
            allowed = caps.models[filled.model].get("allowed_dimensions")
            if filled.dimensions is not None and allowed and filled.dimensions not in allowed:
                raise ValueError(f"provider.dimensions {filled.dimensions}: {filled.model} takes only {allowed}")
            filled = filled.model_copy(update={"dimensions": filled.dimensions or default})
        elif filled.dimensions is not None:
            raise ValueError("provider.dimensions is for provider.endpoint: embeddings only")
        object.__setattr__(self, "provider", filled)
        return self
