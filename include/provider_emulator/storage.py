"""Object storage the batch jobs read and write: GCS (gcp-storage-emulator) and S3 (moto server).

Both run inside the emulator's process on their own free 127.0.0.1 ports; the SDKs under test
reach them directly (STORAGE_EMULATOR_HOST, an S3 endpoint_url) exactly as they would reach
the real services.
"""

from __future__ import annotations

import logging
import urllib.parse

import httpx

log = logging.getLogger("provider_emulator")


def split_uri(uri: str, scheme: str) -> tuple[str, str]:
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != scheme or not parsed.netloc:
        raise ValueError(f"not a {scheme}:// URI: {uri}")
    return parsed.netloc, parsed.path.lstrip("/")


class GCS:
    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")

    def read(self, uri: str) -> bytes | None:
        bucket, name = split_uri(uri, "gs")
        # one connection per call: the GCS emulator's server does not keep connections alive
        r = httpx.get(
            f"{self.base}/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}",
            params={"alt": "media"},
            timeout=30,
        )
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.content

    def write(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        bucket, name = split_uri(uri, "gs")
        r = httpx.post(
            f"{self.base}/upload/storage/v1/b/{bucket}/o",
            params={"uploadType": "media", "name": name},
            content=data,
            headers={"Content-Type": content_type},
            timeout=30,
        )
        r.raise_for_status()


class S3:
    def __init__(self, endpoint_url: str):
        import boto3

        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="emulator",
            aws_secret_access_key="emulator",
        )

    def read(self, uri: str) -> bytes | None:
        bucket, key = split_uri(uri, "s3")
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        except self.client.exceptions.NoSuchBucket:
            return None

    def list(self, uri: str) -> list[str]:
        """Keys under an s3:// prefix (a single object's URI lists itself)."""
        bucket, prefix = split_uri(uri, "s3")
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [obj["Key"] for obj in page.get("Contents", [])]
        return [f"s3://{bucket}/{k}" for k in keys]

    def write(self, uri: str, data: bytes) -> None:
        bucket, key = split_uri(uri, "s3")
        self.client.put_object(Bucket=bucket, Key=key, Body=data)
