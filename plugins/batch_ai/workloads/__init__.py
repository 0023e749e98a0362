"""Workloads: one YAML file per workload in ``include/workloads/``, its prompt and its output schema.

:mod:`.spec` holds the YAML's models, :mod:`.workload` the loaded workload (templates, versions,
the idempotency key) and the loader.
"""

from batch_ai.errors import WorkloadError
from batch_ai.workloads.spec import (
    BatchingSpec,
    DeadlineSpec,
    ProviderSpec,
    ReviewRule,
    SinkSpec,
    SourceSpec,
    ValidationSpec,
    VersionedFile,
    WorkloadSpec,
)
from batch_ai.workloads.workload import PROVIDER_OVERRIDE, Workload, load_workload, load_workload_file, workloads_dir

__all__ = [
    "PROVIDER_OVERRIDE",
    "BatchingSpec",
    "DeadlineSpec",
    "ProviderSpec",
    "ReviewRule",
    "SinkSpec",
    "SourceSpec",
    "ValidationSpec",
    "VersionedFile",
    "Workload",
    "WorkloadError",
    "WorkloadSpec",
    "load_workload",
    "load_workload_file",
    "workloads_dir",
]
