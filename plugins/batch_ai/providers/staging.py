"""Where Vertex AI and Bedrock jobs keep their files: a bucket prefix in GCS or S3.

The two differ only in the Airflow hook that reaches the bucket, so :class:`ObjectStore` says
what a batch needs of a bucket (upload a file, list a prefix, stream a file's lines, delete a
prefix) once, by URI, and :class:`StagingMixin` gives an adapter its staging prefix and the
clean-up after collection.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterator

from batch_ai.errors import StageError
from batch_ai.providers.base import JobInfo, split_jsonl
from batch_ai.providers.request_file import RequestFile

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


def split_uri(uri: str) -> tuple[str, str]:
    """``scheme://bucket/key`` as (bucket, key)."""
    bucket, _, key = uri.split("://", 1)[-1].partition("/")
    return bucket, key


class ObjectStore(abc.ABC):
    """A bucket, by URI, through an Airflow hook."""

    scheme: str

    def __init__(self, hook):
        self.hook = hook

    def uri(self, bucket: str, key: str) -> str:
        return f"{self.scheme}://{bucket}/{key}"

    @abc.abstractmethod
    def upload(self, uri: str, path: str) -> None:
        """Upload a local file (streamed from disk)."""

    @abc.abstractmethod
    def keys(self, bucket: str, prefix: str) -> list[str]: ...

    @abc.abstractmethod
    def delete(self, bucket: str, keys: list[str]) -> None: ...

    @abc.abstractmethod
    def sizes(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        """(key, bytes) of each object under the prefix."""

    @abc.abstractmethod
    def chunks(self, uri: str) -> Iterator[bytes]: ...

    def list(self, prefix_uri: str, suffix: str = "") -> list[str]:
        """The URIs of the objects under a prefix (ending in ``suffix``), sorted."""
        bucket, prefix = split_uri(prefix_uri)
        return sorted(self.uri(bucket, k) for k in self.keys(bucket, prefix) if k.endswith(suffix))

    def lines(self, uri: str) -> Iterator[bytes]:
        """A JSONL object's lines, streamed, split on ``\\n`` only."""
        return split_jsonl(self.chunks(uri))

    def delete_prefix(self, prefix_uri: str) -> int:
        bucket, prefix = split_uri(prefix_uri)
        keys = self.keys(bucket, prefix)
        if keys:
            self.delete(bucket, keys)
        return len(keys)


class GCSStore(ObjectStore):
    scheme = "gs"

    def upload(self, uri: str, path: str) -> None:
        bucket, key = split_uri(uri)
        self.hook.upload(bucket_name=bucket, object_name=key, filename=path, mime_type="application/octet-stream")

    def keys(self, bucket: str, prefix: str) -> list[str]:
        return list(self.hook.list(bucket_name=bucket, prefix=prefix) or [])

    def delete(self, bucket: str, keys: list[str]) -> None:
        for key in keys:
            self.hook.delete(bucket_name=bucket, object_name=key)

    def sizes(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        return [(b.name, b.size or 0) for b in self.hook.get_conn().bucket(bucket).list_blobs(prefix=prefix)]

    def chunks(self, uri: str) -> Iterator[bytes]:
        bucket, key = split_uri(uri)
        with self.hook.get_conn().bucket(bucket).blob(key).open("rb") as fh:
            yield from iter(lambda: fh.read(CHUNK_BYTES), b"")


class S3Store(ObjectStore):
    scheme = "s3"

    def upload(self, uri: str, path: str) -> None:
        bucket, key = split_uri(uri)
        self.hook.load_file(path, key=key, bucket_name=bucket, replace=True)

    def keys(self, bucket: str, prefix: str) -> list[str]:
        return list(self.hook.list_keys(bucket_name=bucket, prefix=prefix) or [])

    def delete(self, bucket: str, keys: list[str]) -> None:
        self.hook.delete_objects(bucket=bucket, keys=keys)

    def sizes(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        pages = self.hook.get_conn().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [(o["Key"], o["Size"]) for page in pages for o in page.get("Contents", [])]

    def chunks(self, uri: str) -> Iterator[bytes]:
        bucket, key = split_uri(uri)
        yield from self.hook.get_conn().get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(CHUNK_BYTES)


class StagingMixin:
    """For an adapter whose jobs read and write a bucket: its staging prefix and the clean-up."""

    store: ObjectStore  # set by the adapter
    staging_uri: str | None
    conn_id: str
    #: what the adapter says when no staging prefix is set, e.g. "Vertex batch jobs stage their files in GCS"
    staging_needs: str

    @property
    def staging(self) -> str:
        """The prefix jobs are staged under: the workload's ``staging_uri``, else the connection's extra."""
        scheme = self.store.scheme
        uri = self.staging_uri or self.conn_extra.get("batch_ai_staging_uri")
        if not uri or not uri.startswith(f"{scheme}://"):
            raise StageError(
                f"{self.staging_needs}: set provider.staging_uri ({scheme}://bucket/prefix) in the workload or the "
                f"extra batch_ai_staging_uri on the {self.conn_id!r} connection"
            )
        return uri.rstrip("/")

    def stage_input(self, token: str, requests: RequestFile) -> str:
        """Upload a job's input file under its own prefix; returns its URI."""
        uri = f"{self.staging}/{token}/input.jsonl"
        self.store.upload(uri, requests.path)
        log.info("staged %d requests (%d bytes) at %s", requests.count, requests.size, uri)
        return uri

    def cleanup(self, job: JobInfo) -> None:
        """Delete everything staged for the job: its prefix (input and results)."""
        prefix = self._job_prefix(job)
        if prefix:
            deleted = self.store.delete_prefix(prefix)
            log.info("deleted %d staged object(s) under %s", deleted, prefix)

    def staged_files(self, job: JobInfo) -> list[tuple[str, int | None]]:
        prefix = self._job_prefix(job)
        if not prefix:
            return []
        bucket, key = split_uri(prefix)
        return [(self.store.uri(bucket, k), size) for k, size in self.store.sizes(bucket, key)]

    def delete_staged(self, job: JobInfo, names: list[str]) -> None:
        by_bucket: dict[str, list[str]] = {}
        for uri in names:
            bucket, key = split_uri(uri)
            by_bucket.setdefault(bucket, []).append(key)
        for bucket, keys in by_bucket.items():
            self.store.delete(bucket, keys)

    @staticmethod
    def _job_prefix(job: JobInfo) -> str | None:
        """The job's own prefix (its input and its results): the folder of its input file."""
        source = job.details.get("input_uri")
        return source.rsplit("/", 1)[0] + "/" if source else None
