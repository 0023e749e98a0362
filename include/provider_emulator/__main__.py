"""Run the emulator: ``python -m provider_emulator [--port N] [--faults FILE_OR_JSON]``.

Prints one JSON line with the connection settings once it is listening, then serves until
interrupted. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path

import uvicorn

from provider_emulator.app import create_app
from provider_emulator.faults import FaultConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(port: int) -> dict:
    base = f"http://127.0.0.1:{port}"
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
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m provider_emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--faults", default=None, help="fault configuration: a JSON file or a JSON string")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    config = FaultConfig()
    if args.faults:
        text = args.faults if args.faults.lstrip().startswith("{") else Path(args.faults).read_text()
        config = FaultConfig.model_validate(json.loads(text))
    port = args.port or free_port()
    app = create_app(config, on_ready=lambda: print(json.dumps(settings(port)), flush=True))
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=args.log_level)).run()
    sys.exit(0)


if __name__ == "__main__":
    main()
