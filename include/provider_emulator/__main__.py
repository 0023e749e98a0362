"""Run the emulator: ``python -m provider_emulator [--port N] [--faults FILE_OR_JSON]``.

Starts the provider API server, an S3 server (moto) for Bedrock and a GCS server
(gcp-storage-emulator) for Vertex AI, each on a free 127.0.0.1 port. Prints one JSON line
with the connection settings once everything listens, then serves until interrupted.

Each server binds its own socket (port 0 unless one is given) and the port is read back from
it, so two emulators starting at once never race for a port picked before it was bound.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
from pathlib import Path

import uvicorn

from provider_emulator.app import create_app
from provider_emulator.faults import FaultConfig

HOST = "127.0.0.1"
GCP_PROJECT = "batch-ai-local"
GCP_LOCATION = "us-central1"
AWS_REGION = "us-east-1"
STAGING_BUCKET = "batch-ai-staging"  # made in both GCS and S3 at start, for staging job files
EMULATOR_ROLE = "arn:aws:iam::123456789012:role/batch-ai-emulator"


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0: any free port), for uvicorn to serve on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def settings(port: int, gcs_port: int, s3_port: int, host: str = HOST) -> dict:
    """How each SDK and each Airflow connection reaches the emulator (at ``host``: the name
    clients use for it, ``emulator`` in docker-compose.yaml)."""
    base = f"http://{host}:{port}"
    gcs = f"http://{host}:{gcs_port}"
    s3 = f"http://{host}:{s3_port}"
    return {
        "base_url": base,
        "openai": {
            "base_url": f"{base}/openai/v1",
            "airflow_connection": {
                "conn_type": "openai",
                "password": "emulator-key",
                "extra": {"openai_client_kwargs": {"base_url": f"{base}/openai/v1"}},
            },
        },
        "anthropic": {
            "base_url": f"{base}/anthropic",
            "airflow_connection": {"conn_type": "anthropic", "password": "emulator-key", "host": f"{base}/anthropic"},
        },
        "vertex": {
            "base_url": f"{base}/vertex/",
            "project": GCP_PROJECT,
            "location": GCP_LOCATION,
            "storage_emulator_host": gcs,
            "staging_uri": f"gs://{STAGING_BUCKET}/jobs",
            "airflow_connection": {
                "conn_type": "google_cloud_platform",
                "extra": {
                    "project": GCP_PROJECT,
                    "is_anonymous": True,
                    "vertex_base_url": f"{base}/vertex/",
                    "batch_ai_staging_uri": f"gs://{STAGING_BUCKET}/jobs",
                },
            },
            # google-cloud-storage finds the GCS emulator through this variable
            "environment": {"STORAGE_EMULATOR_HOST": gcs},
        },
        "bedrock": {
            "endpoint_url": f"{base}/bedrock",
            "region": AWS_REGION,
            "s3_endpoint_url": s3,
            "staging_uri": f"s3://{STAGING_BUCKET}/jobs",
            "airflow_connection": {
                "conn_type": "aws",
                "login": "emulator",
                "password": "emulator",
                "extra": {
                    "region_name": AWS_REGION,
                    "service_config": {
                        "s3": {"endpoint_url": s3},
                        "bedrock": {"endpoint_url": f"{base}/bedrock"},
                        "bedrock-runtime": {"endpoint_url": f"{base}/bedrock"},
                    },
                    "batch_ai_staging_uri": f"s3://{STAGING_BUCKET}/jobs",
                    "batch_ai_role_arn": EMULATOR_ROLE,
                },
            },
        },
    }


def _local(host: str) -> str:
    """How this process reaches its own servers listening on ``host``."""
    return HOST if host in ("0.0.0.0", "") else host


def start_storage(gcs_port: int, s3_port: int, host: str = HOST):
    """The GCS and S3 servers, in this process's threads, and the ports they listen on."""
    import boto3
    from gcp_storage_emulator.server import create_server
    from moto.server import ThreadedMotoServer

    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    gcs = create_server(host, gcs_port, in_memory=True, default_bucket=STAGING_BUCKET)
    gcs.start()
    gcs_port = gcs._api._httpd.server_address[1]  # the port it bound (0 asks for any free one)
    s3 = ThreadedMotoServer(ip_address=host, port=s3_port, verbose=False)
    s3.start()
    s3_port = s3.get_host_and_port()[1]
    boto3.client(
        "s3",
        endpoint_url=f"http://{_local(host)}:{s3_port}",
        region_name=AWS_REGION,
        aws_access_key_id="emulator",
        aws_secret_access_key="emulator",
    ).create_bucket(Bucket=STAGING_BUCKET)
    return gcs, s3, gcs_port, s3_port


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m provider_emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="API port (0: a free one)")
    parser.add_argument("--gcs-port", type=int, default=0)
    parser.add_argument("--s3-port", type=int, default=0)
    parser.add_argument("--host", default=HOST, help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--public-host", default=None, help="the name clients reach it by (default: --host)")
    parser.add_argument("--faults", default=None, help="fault configuration: a JSON file or a JSON string")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    config = FaultConfig()
    if args.faults:
        text = args.faults if args.faults.lstrip().startswith("{") else Path(args.faults).read_text()
        config = FaultConfig.model_validate(json.loads(text))
    gcs, s3, gcs_port, s3_port = start_storage(args.gcs_port, args.s3_port, args.host)
    sock = listen(args.host, args.port)
    port = sock.getsockname()[1]
    public, local = args.public_host or args.host, _local(args.host)
    try:
        app = create_app(
            config,
            gcs_url=f"http://{local}:{gcs_port}",
            s3_url=f"http://{local}:{s3_port}",
            on_ready=lambda: print(json.dumps(settings(port, gcs_port, s3_port, public)), flush=True),
        )
        uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level=args.log_level)).run(sockets=[sock])
    finally:
        s3.stop()
        gcs.stop()


if __name__ == "__main__":
    main()
