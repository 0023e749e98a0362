"""docker-compose.yaml and the Dockerfile: a valid compose file (the Compose Specification's JSON
schema, tests/reference/compose-spec.json), the topology of Airflow's own compose file on
CeleryExecutor, and the emulator connections it ships in sync with the emulator's own settings.
Docker itself is not needed (nor available on the test machines)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import yaml

from provider_emulator.__main__ import settings
from provider_emulator.launcher import connection_env

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yaml").read_text())  # anchors and << merged
SERVICES = COMPOSE["services"]
AIRFLOW = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker")


def test_the_compose_file_is_valid_against_the_compose_specification():
    schema = json.loads((REPO / "tests" / "reference" / "compose-spec.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(COMPOSE), key=lambda e: list(e.path))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_one_service_per_airflow_component_each_healthchecked_and_restarted():
    assert set(SERVICES) == {*AIRFLOW, "airflow-init", "postgres", "redis", "emulator"}
    for name in {*AIRFLOW, "postgres", "redis", "emulator"}:
        service = SERVICES[name]
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "always", name
    assert SERVICES["airflow-worker"]["command"] == "celery worker"
    for name in AIRFLOW:
        env = SERVICES[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert SERVICES[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert SERVICES[name]["build"]["target"] == "airflow"
        assert any(v.endswith(":/opt/airflow/logs") for v in SERVICES[name]["volumes"]), "logs on a volume"
        assert SERVICES[name]["user"] == "${AIRFLOW_UID:-50000}:0"
    assert SERVICES["emulator"]["build"]["target"] == "emulator"


def test_nothing_is_installed_at_container_start_and_the_image_carries_no_test_tools():
    assert "pip install" not in (REPO / "docker-compose.yaml").read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.11 AS airflow$", dockerfile, re.M)
    assert "requirements-dev.txt" not in dockerfile
    runtime = (REPO / "requirements.txt").read_text()
    for tool in ("pytest", "ruff", "moto", "gcp-storage-emulator"):
        assert not re.search(rf"^{tool}\b", runtime, re.M), f"{tool} is not a runtime requirement"
    assert re.search(r"^apache-airflow\[postgres,celery\]==", runtime, re.M)


def test_every_provider_connection_points_at_the_emulator_service():
    env = {}
    for line in (REPO / ".env.emulator").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value.strip("'")
    # the same variables the launcher gives a local Airflow, for the emulator at `emulator`
    assert env == connection_env(settings(8099, 8098, 8097, "emulator"))
    assert "--public-host" in (REPO / "Dockerfile").read_text()
    assert [f["path"] for f in SERVICES["airflow-worker"]["env_file"]] == [".env.emulator", ".env"]
