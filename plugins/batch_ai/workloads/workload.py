"""A workload: its validated spec with the prompt and schema files it names, loaded from YAML.

``load_workload(name)`` reads ``include/workloads/<name>.yaml`` once per process; the prompt
templates are compiled and checked against the declared source fields, so a mistake fails when
the DAG is parsed, naming the file and the field.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from pydantic import ValidationError

from batch_ai import include_dir
from batch_ai.errors import WorkloadError
from batch_ai.ledger.common import RecordKey
from batch_ai.providers.base import Prompt, RequestOptions
from batch_ai.providers.capabilities import capabilities
from batch_ai.workloads.spec import VersionedFile, WorkloadSpec


class Workload:
    """A validated spec together with the prompt and schema files it names."""

    def __init__(self, spec: WorkloadSpec, path: Path, root: Path, *, moved: bool = False):
        self.spec = spec
        self.path = path
        self.root = root
        #: moved to another provider by ``BATCH_AI_PROVIDER`` (its model and vector length are that provider's)
        self.moved = moved
        self.prompt_path = root / spec.prompt.file
        self.schema_path = root / spec.output_schema.file
        for what, p in (("prompt", self.prompt_path), ("output_schema", self.schema_path)):
            if not p.is_file():
                raise WorkloadError(path, f"{what}.file {p.relative_to(root)} does not exist")
        self.prompt_bytes = self.prompt_path.read_bytes()
        self.schema_bytes = self.schema_path.read_bytes()
        try:
            prompt = yaml.safe_load(self.prompt_bytes)
            if self.embeds:  # the text to embed: one template, no instructions
                self.system_template, self.user_template = "", prompt["input"]
            else:
                self.system_template, self.user_template = prompt["system"], prompt["user"]
        except (yaml.YAMLError, KeyError, TypeError) as exc:
            keys = "an 'input' key (the text to embed)" if self.embeds else "'system' and 'user' keys"
            raise WorkloadError(self.prompt_path, f"a prompt file is YAML with {keys}: {exc}") from None
        try:
            self.output_schema: dict[str, Any] = json.loads(self.schema_bytes)
            jsonschema.Draft202012Validator.check_schema(self.output_schema)
        except (json.JSONDecodeError, jsonschema.SchemaError) as exc:
            raise WorkloadError(self.schema_path, f"not a valid JSON Schema: {exc}") from None
        self._check_rules_against_schema()
        if self.embeds:
            self._check_vector_schema()
        env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
        self._system, self._user = self._templates(env)
        #: declared fields a row may lack render as empty text rather than failing the render
        self._absent = {name: "" for name in spec.source.declared_fields()}

    def with_versions(self, prompt: str | None = None, schema: str | None = None) -> Workload:
        """This workload with another prompt and/or schema version (a backfill's override).

        The file of version ``vN`` lies beside the configured one, named ``vN`` with the same
        suffix (``prompts/ticket_summary/v2.yaml``).
        """
        s = self.spec
        update = {}
        for field, version in (("prompt", prompt), ("output_schema", schema)):
            current: VersionedFile = getattr(s, field)
            if version and version != current.version:
                folder, _, filename = current.file.rpartition("/")
                suffix = filename[filename.find(".") :] if "." in filename else ""
                update[field] = VersionedFile.model_validate(
                    {"file": f"{folder}/{version}{suffix}" if folder else f"{version}{suffix}", "version": version}
                )
        if not update:
            return self
        return Workload(s.model_copy(update=update), self.path, self.root, moved=self.moved)

    def with_target(self, target: str | None) -> Workload:
        """This workload on one evaluation target (``provider:model``)."""
        if not target:
            return self
        s = self.spec
        match = next((t for t in (s.evaluation.targets if s.evaluation else []) if t.key == target), None)
        if match is None:
            raise WorkloadError(self.path, f"{target} is not one of the evaluation targets")
        return Workload(
            s.model_copy(update={"provider": match.provider_spec(s.provider)}), self.path, self.root, moved=self.moved
        )

    # identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def embeds(self) -> bool:
        """Whether its requests ask for embeddings (a vector per record, not an answer to a schema)."""
        return self.spec.provider.endpoint == "embeddings"

    def record_key(self) -> RecordKey:
        """The version part of its records' idempotency key (the rest is each source id)."""
        s = self.spec
        return RecordKey(s.name, s.prompt.version, s.provider.model, s.output_schema.version)

    def request_options(self) -> RequestOptions:
        """What every request of the workload carries besides its prompt."""
        p = self.spec.provider
        schema_dir = self.spec.output_schema.file.rsplit("/", 1)[0].rsplit("/", 1)[-1]
        return RequestOptions(
            model=p.model,
            output_schema=self.output_schema,
            schema_name=f"{schema_dir}_{self.spec.output_schema.version}"[:64],
            max_output_tokens=p.max_output_tokens,
            temperature=p.temperature,
            endpoint=p.endpoint,
            dimensions=p.dimensions,
        )

    def prompt_for(self, record_input: dict[str, Any]) -> Prompt:
        """The rendered prompt for one record's input."""
        system, user = self.render(record_input)
        return Prompt(system, user)

    @property
    def conn_id(self) -> str:
        return self.spec.provider.conn_id or capabilities().provider(self.spec.provider.name).default_conn_id

    def artifacts(self) -> list[tuple[str, str, str, str]]:
        """(kind, version, sha256, path) of the prompt and schema, for the version check."""
        return [
            ("prompt", self.spec.prompt.version, hashlib.sha256(self.prompt_bytes).hexdigest(), self.spec.prompt.file),
            (
                "schema",
                self.spec.output_schema.version,
                hashlib.sha256(self.schema_bytes).hexdigest(),
                self.spec.output_schema.file,
            ),
        ]

    # prompt ---------------------------------------------------------------------------
    def _templates(self, env: SandboxedEnvironment):
        """Compile the prompt's templates and check them against the declared source fields, so a
        misspelt field fails when the DAG is parsed, naming the prompt file and the field."""
        from jinja2 import TemplateError, nodes

        declared = self.spec.source.declared_fields()
        compiled = []
        for part in ("system", "user"):
            text = self.system_template if part == "system" else self.user_template
            try:
                tree = env.parse(text)
                template = env.from_string(text)
            except TemplateError as exc:
                raise WorkloadError(self.prompt_path, f"{part}: not a valid template: {exc}") from None
            used = {
                n.attr
                for n in tree.find_all(nodes.Getattr)
                if isinstance(n.node, nodes.Name) and n.node.name == "record"
            }
            used |= {
                n.arg.value
                for n in tree.find_all(nodes.Getitem)
                if isinstance(n.node, nodes.Name) and n.node.name == "record" and isinstance(n.arg, nodes.Const)
            }
            unknown = sorted(str(u) for u in used - set(declared))
            if unknown:
                raise WorkloadError(
                    self.prompt_path,
                    f"{part}: the template uses record.{unknown[0]}, which is not a source field of {self.path.name} "
                    f"(declared: {', '.join(sorted(declared))}); declare it under source.fields or fix the name",
                )
            try:  # a row with every declared field: catches what the names alone do not
                template.render(record={name: _PROBE[kind] for name, kind in declared.items()})
            except Exception as exc:  # noqa: BLE001 - any render failure is the template's
                raise WorkloadError(
                    self.prompt_path, f"{part}: the template fails on a typical row: {type(exc).__name__}: {exc}"
                ) from None
            compiled.append(template)
        return compiled

    def render(self, record: dict[str, Any]) -> tuple[str, str]:
        """(system, user) messages for one source record; declared fields it lacks render empty."""
        values = {**self._absent, **record}
        return self._system.render(record=values).strip(), self._user.render(record=values).strip()

    def source_uri(self, *, ds: str, data_interval_start: datetime | None, data_interval_end: datetime | None) -> str:
        uri = re.sub(r"\$\{(\w+)\}", lambda m: _env(m.group(1), self.path), self.spec.source.uri)
        return uri.format(
            ds=ds,
            ds_nodash=ds.replace("-", ""),
            data_interval_start=data_interval_start.isoformat() if data_interval_start else "",
            data_interval_end=data_interval_end.isoformat() if data_interval_end else "",
        )

    def _check_rules_against_schema(self) -> None:
        props = self.output_schema.get("properties", {})
        v = self.spec.validation
        named = set(v.required) | set(v.enums) | set(v.max_length) | set(self.spec.sink.columns)
        named |= {r.field for r in self.spec.review.rules} | {r.field for r in v.spans}
        if self.spec.evaluation:
            named.add(self.spec.evaluation.output_field)
        if v.echo_id_field:
            named.add(v.echo_id_field)
        unknown = sorted(n for n in named if n not in props)
        if unknown:
            raise WorkloadError(self.path, f"fields {unknown} are not properties of {self.spec.output_schema.file}")
        for fld, allowed in v.enums.items():
            schema_enum = props[fld].get("enum")
            if schema_enum is not None and set(allowed) - set(schema_enum):
                raise WorkloadError(
                    self.path,
                    f"validation.enums.{fld} allows {sorted(set(allowed) - set(schema_enum))} not in the schema",
                )

    def _check_vector_schema(self) -> None:
        """An embeddings workload's output is ``{model, dimensions, vector}``; its schema fixes the
        dimensions (``dimensions.const``), so another length is another schema version (and
        another idempotency key), never vectors of two lengths under one."""
        props = self.output_schema.get("properties", {})
        missing = [f for f in ("model", "dimensions", "vector") if f not in props]
        if missing:
            raise WorkloadError(
                self.schema_path,
                f"an embeddings output schema needs the properties model, dimensions, vector: {missing} missing",
            )
        fixed = props["dimensions"].get("const")
        wanted = self.spec.provider.dimensions
        if fixed != wanted and self.moved:
            # the switch runs it on another provider's default embedding model, at that model's
            # length: a new model is a new idempotency key already, so no two lengths meet
            dimensions = {**props["dimensions"], "const": wanted}
            self.output_schema = {**self.output_schema, "properties": {**props, "dimensions": dimensions}}
        elif fixed != wanted:
            raise WorkloadError(
                self.path,
                f"provider.dimensions is {wanted} ({self.spec.provider.model}), but {self.spec.output_schema.file} "
                f"fixes dimensions.const at {fixed}: make them agree (a new length is a new schema version)",
            )


#: A typical value of each declared field type, for checking a template when the DAG is parsed.
_PROBE: dict[str, Any] = {
    "string": "text",
    "integer": 1,
    "number": 1.5,
    "boolean": True,
    "array": ["text"],
    "object": {"key": "text"},
    "any": "text",
}


def _env(name: str, path: Path) -> str:
    try:
        return os.environ[name]
    except KeyError:
        raise WorkloadError(path, f"environment variable {name} is not set") from None


def workloads_dir() -> Path:
    return include_dir() / "workloads"


def workload_names() -> list[str]:
    """The workloads there are: the names of ``include/workloads/*.yaml``."""
    return sorted(p.stem for p in workloads_dir().glob("*.yaml"))


@functools.cache
def load_workload(name: str) -> Workload:
    """Load and validate ``include/workloads/<name>.yaml`` (cached per process)."""
    path = workloads_dir() / f"{name}.yaml"
    if not path.is_file():
        raise WorkloadError(path, f"no such workload; known: {workload_names()}")
    return load_workload_file(path)


#: Runs every workload on another provider (with that provider's default model): the switch
#: the demo and the tests use. In production, set ``provider.name`` in the workload's YAML.
PROVIDER_OVERRIDE = "BATCH_AI_PROVIDER"


def _serves(provider: str, spec: dict) -> bool:
    """Whether the override's provider serves the workload's endpoint (an embeddings workload
    keeps its own provider where the other has no batch embeddings, and its DAG still loads)."""
    from batch_ai.providers.capabilities import capabilities

    return spec.get("endpoint", "chat") in capabilities().provider(provider).endpoints


def load_workload_file(path: Path) -> Workload:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise WorkloadError(path, f"not valid YAML: {exc}") from None
    override = os.environ.get(PROVIDER_OVERRIDE)
    provider = raw.get("provider") if isinstance(raw, dict) else None
    moved = bool(
        override and isinstance(provider, dict) and provider.get("name") != override and _serves(override, provider)
    )
    if moved:
        # the model, and the vector length it was chosen for, become the new provider's defaults
        keep = {k: v for k, v in provider.items() if k not in ("name", "model", "conn_id", "region", "dimensions")}
        raw["provider"] = {**keep, "name": override}
    try:
        spec = WorkloadSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<top>'}: {e['msg']}" for e in exc.errors())
        raise WorkloadError(path, problems) from None
    if spec.name != path.stem:
        raise WorkloadError(path, f"name {spec.name!r} must match the file name {path.stem!r}")
    return Workload(spec, path, include_dir(), moved=moved)
