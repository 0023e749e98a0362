"""``python -m batch_ai stack up|down|status``: the topology of docker-compose.yaml without Docker.

From the project's venv, on 127.0.0.1: Airflow's ``api-server``, ``scheduler``, ``dag-processor``,
``triggerer`` and a ``celery worker`` (CeleryExecutor, with a ``redis-server`` of its own as the
broker), PostgreSQL for Airflow's metadata and the ledger (a database of the stack's own), and
the provider emulator that every provider connection points at. Each process runs in a session
of its own, its PID and log under ``.stack/``; ``down`` stops exactly those PIDs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from batch_ai.localenv import REPO, airflow_bin, airflow_env, free_port

DEFAULT_DIR = REPO / ".stack"
DEFAULT_PG = os.environ.get("BATCH_AI_STACK_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
#: the environment the stack sets for its components (kept in stack.json)
OWN_ENV = ("AIRFLOW", "BATCH_AI", "STORAGE_EMULATOR", "PYTHONPATH")
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", "worker")
ADMIN = "admin"  # the simple auth manager's one user; its password is in <dir>/passwords.json


class StackError(RuntimeError):
    pass


def redis_server() -> str:
    """The ``redis-server`` binary (Debian's package; ``make stack`` installs it when missing)."""
    found = shutil.which("redis-server")
    if not found:
        raise StackError("redis-server is not installed: `make stack` installs Debian's redis-server (as root)")
    return found


class Stack:
    """The processes of one local deployment, recorded in ``<dir>/stack.json``."""

    def __init__(self, directory: Path = DEFAULT_DIR):
        self.dir = Path(directory)
        self.state_file = self.dir / "stack.json"

    # -- state ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def _save(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=1))

    def _spawn(self, state: dict[str, Any], name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it open
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        state["pids"][name] = proc.pid
        state.setdefault("argv", {})[name] = argv
        self._save(state)  # recorded at once: `down` stops it even if `up` fails later
        return proc

    # -- up ---------------------------------------------------------------------------------
    def up(self, *, pg: str = DEFAULT_PG, database: str = "batch_ai_stack", port: int = 8080, faults=None) -> dict:
        if self.running():
            raise StackError(f"a stack is already running (see {self.state_file}); `stack down` first")
        self.dir.mkdir(parents=True, exist_ok=True)
        url = _database(pg, database)
        state: dict[str, Any] = {"pids": {}, "db": url, "api": f"http://127.0.0.1:{port}", "dir": str(self.dir)}
        try:
            self._start(state, url, port, faults)
        except BaseException:
            self.down()
            raise
        return state

    def _start(self, state: dict[str, Any], url: str, port: int, faults) -> None:
        redis_port = free_port()
        self._spawn(
            state,
            "redis",
            [redis_server(), "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            dict(os.environ),
        )
        emulator = self._emulator(state, faults)
        env = self.environment(url, port, redis_port, emulator)
        state["env"] = {k: v for k, v in env.items() if k.startswith(OWN_ENV)}  # to restart a component
        self._save(state)
        subprocess.run([airflow_bin(), "db", "migrate"], env=env, check=True, capture_output=True)
        argv = {
            "api-server": ["api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer"],
            "worker": ["celery", "worker", "--concurrency", "2"],
        }
        for name in COMPONENTS:
            self._spawn(state, name, [airflow_bin(), *argv[name]], env)
        _wait_for(lambda: _ok(f"http://127.0.0.1:{port}/api/v2/monitor/health"), "the api-server", self.dir)

    def _emulator(self, state: dict[str, Any], faults) -> dict[str, Any]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO / "plugins")])}
        out = self.dir / "emulator.settings"
        out.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "provider_emulator", *(["--faults", json.dumps(faults)] if faults else [])]
        log = open(self.dir / "emulator.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(argv, env=env, stdout=open(out, "wb"), stderr=log, start_new_session=True)  # noqa: SIM115
        state["pids"]["emulator"] = proc.pid
        self._save(state)
        _wait_for(lambda: out.exists() and out.read_text().strip(), "the provider emulator", self.dir)
        settings = json.loads(out.read_text().splitlines()[0])
        state["emulator"] = settings["base_url"]
        return settings

    def environment(self, url: str, port: int, redis_port: int, emulator: dict[str, Any]) -> dict[str, str]:
        from provider_emulator.launcher import connection_env

        home = self.dir / "airflow"
        data = self.dir / "data"
        psycopg = url.replace("postgresql+psycopg2://", "postgresql://")
        env = airflow_env(
            home,
            ledger_url=url,
            data_dir=data,
            extra={
                **connection_env(emulator),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{psycopg}",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
                "AIRFLOW__API_AUTH__JWT_SECRET": _secret(self.dir),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(_passwords(self.dir)),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "BATCH_AI_REPORT_DIR": str(self.dir / "reports"),
            },
        )
        return env

    def kill(self, name: str) -> None:
        """SIGKILL one component's process group, as a lost machine would."""
        pid = self.state()["pids"][name]
        _signal(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)

    def start(self, name: str) -> int:
        """Start one component again, as it was started by ``up``."""
        state = self.state()
        proc = self._spawn(state, name, state["argv"][name], {**os.environ, **state["env"]})
        return proc.pid

    # -- down, status -----------------------------------------------------------------------
    def running(self) -> dict[str, int]:
        return {name: pid for name, pid in self.state().get("pids", {}).items() if _alive(pid)}

    def down(self, timeout: float = 30) -> list[str]:
        """Stop exactly the recorded processes (their process groups): TERM, then KILL."""
        pids = self.state().get("pids", {})
        for pid in pids.values():
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
            time.sleep(0.2)
        for pid in pids.values():
            _signal(pid, signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
        return list(pids)

    def status(self) -> dict[str, str]:
        state = self.state()
        report = {
            name: ("running" if _alive(pid) else "stopped") + f" (pid {pid})"
            for name, pid in state.get("pids", {}).items()
        }
        if state.get("api"):
            report["api health"] = "ok" if _ok(f"{state['api']}/api/v2/monitor/health") else "not answering"
        return report


def _database(pg: str, name: str) -> str:
    """``pg``'s database ``name``, created when missing."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"{pg.rstrip('/')}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if not conn.scalar(sa.text("select 1 from pg_database where datname = :n"), {"n": name}):
                conn.execute(sa.text(f'create database "{name}"'))
    finally:
        engine.dispose()
    return f"{pg.rstrip('/')}/{name}"


def _secret(directory: Path) -> str:
    """One JWT secret the stack's components share (the workers' tokens are checked by the api-server)."""
    path = directory / "jwt-secret"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(os.urandom(24).hex())
    return path.read_text()


def _passwords(directory: Path) -> Path:
    """The simple auth manager's passwords file: a random password for the admin, made once,
    readable by its owner only (the same file the api-server reads; never printed)."""
    path = directory / "passwords.json"
    if not path.exists():
        import secrets

        path.touch(mode=0o600)
        path.write_text(json.dumps({ADMIN: secrets.token_urlsafe(12)}))
    return path


def password(directory: Path = DEFAULT_DIR, user: str = ADMIN) -> str:
    return json.loads(_passwords(Path(directory)).read_text())[user]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of this process is not alive
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, sig)  # each was started in a session (and process group) of its own


def _ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).is_success
    except httpx.HTTPError:
        return False


def _wait_for(check, what: str, directory: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise StackError(f"{what} did not come up in {timeout:.0f}s (logs in {directory})")


def yesterday() -> str:
    return (datetime.now(UTC) - timedelta(days=1)).date().isoformat()


def main(args) -> int:
    stack = Stack(Path(args.dir))
    if args.action == "up":
        state = stack.up(pg=args.pg, database=args.database, port=args.port)
        from batch_ai.demo import seed_all

        seed_all(Path(state["env"]["BATCH_AI_DATA_DIR"]), args.date or yesterday(), 120)
        print(f"Airflow on {state['api']}, the emulator on {state['emulator']}")
        print(f"log in as {ADMIN!r}, with the password in {stack.dir / 'passwords.json'}")
        print(
            f"metadata and ledger: {state['db']}; PIDs and logs in {stack.dir}; "
            "`python -m batch_ai stack down` stops it"
        )
    elif args.action == "env":  # eval "$(python -m batch_ai stack env)": the airflow CLI on the stack
        for key, value in sorted(stack.state().get("env", {}).items()):
            print(f"export {key}={shlex.quote(value)}")
    elif args.action == "down":
        stopped = stack.down()
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    else:
        for name, what in stack.status().items():
            print(f"{name:<14} {what}")
    return 0
