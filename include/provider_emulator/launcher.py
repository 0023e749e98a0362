"""Start and stop the emulator as a child process (used by ``make demo`` and the tests)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from provider_emulator.faults import FaultConfig

#: the Airflow connection each provider's adapter uses by default
CONN_IDS = {
    "openai": "OPENAI_DEFAULT",
    "anthropic": "ANTHROPIC_DEFAULT",
    "vertex": "GOOGLE_CLOUD_DEFAULT",
    "bedrock": "AWS_DEFAULT",
}


def connection_env(settings: dict[str, Any]) -> dict[str, str]:
    """Environment variables defining the Airflow connections that point at an emulator with
    these settings (the line it prints when it listens)."""
    env = {f"AIRFLOW_CONN_{CONN_IDS[p]}": json.dumps(settings[p]["airflow_connection"]) for p in CONN_IDS}
    env.update(settings["vertex"]["environment"])
    return env


class Emulator:
    """``with Emulator() as emu: emu.settings["openai"]["base_url"]``"""

    def __init__(self, faults: FaultConfig | dict | None = None, log_file: Path | None = None):
        self.faults = FaultConfig.model_validate(faults or {})
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None
        self.settings: dict[str, Any] = {}

    def start(self, timeout: float = 90) -> Emulator:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")])
        )
        stderr = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "provider_emulator", "--faults", self.faults.model_dump_json()],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            text=True,
        )
        deadline = time.monotonic() + timeout
        # the settings line, printed once listening; never wait for it past the deadline
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            what = "exited before it was ready" if ready else f"printed no settings in {timeout:.0f}s"
            raise RuntimeError(f"the provider emulator {what} (see {self.log_file or 'stderr'})")
        self.settings = json.loads(line)
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/_emulator/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"the provider emulator did not answer its health check in {timeout:.0f}s (see {self.log_file or 'stderr'})"
        )

    @property
    def base_url(self) -> str:
        return self.settings["base_url"]

    def set_faults(self, faults: FaultConfig | dict) -> None:
        config = FaultConfig.model_validate(faults)
        httpx.put(f"{self.base_url}/_emulator/faults", json=config.model_dump(), timeout=10).raise_for_status()

    def fault_log(self) -> dict[str, dict[str, str]]:
        return httpx.get(f"{self.base_url}/_emulator/fault-log", timeout=10).json()

    def jobs(self, provider: str) -> list[str]:
        """Ids of the batch jobs the emulator holds for a provider."""
        return httpx.get(f"{self.base_url}/_emulator/jobs", timeout=10).json()[provider]

    def created(self, provider: str) -> list[str]:
        """Every job the provider ever created (deleted ones included)."""
        return httpx.get(f"{self.base_url}/_emulator/created", timeout=10).json()[provider]

    def busy(self) -> dict[str, float]:
        """Seconds each provider spent validating and answering jobs: the provider's own time."""
        return httpx.get(f"{self.base_url}/_emulator/busy", timeout=10).json()

    def calls(self) -> dict[str, int]:
        return httpx.get(f"{self.base_url}/_emulator/calls", timeout=10).json()

    def airflow_env(self) -> dict[str, str]:
        """Environment variables defining the Airflow connections that point at the emulator."""
        return connection_env(self.settings)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
