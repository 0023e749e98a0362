"""The emulator's HTTP app: provider routers, HTTP fault injection and admin endpoints."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from provider_emulator.faults import FaultConfig, HttpFaultQueue
from provider_emulator.openai_api import OpenAIEmulator, router as openai_router

log = logging.getLogger("provider_emulator")

ADMIN = "/_emulator"


class EmulatorState:
    def __init__(self, config: FaultConfig):
        self.lock = threading.Lock()
        self.http_faults = {"openai": HttpFaultQueue()}
        self.fault_log: dict[str, dict[str, str]] = {"openai": {}}
        self.calls: Counter = Counter()
        self.configure(config)

    def configure(self, config: FaultConfig) -> None:
        self.config = config
        self.http_faults["openai"].load(config.openai.http_errors)

    def log_fault(self, provider: str, key: str, fault: str) -> None:
        with self.lock:
            self.fault_log[provider][key] = fault


def provider_of(path: str) -> str | None:
    return "openai" if path.startswith("/v1/") else None


def create_app(config: FaultConfig | None = None, on_ready: Callable[[], None] | None = None) -> FastAPI:
    state = EmulatorState(config or FaultConfig())

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        if on_ready:
            on_ready()  # the socket is bound by now
        yield

    app = FastAPI(title="batch-ai provider emulator", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.emulator = state
    openai = OpenAIEmulator(state)

    @app.middleware("http")
    async def faults_and_auth(request: Request, call_next):
        path = request.url.path
        provider = provider_of(path)
        if provider is None:
            return await call_next(request)
        state.calls[f"{request.method} {path}"] += 1
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return JSONResponse(
                {"error": {"message": "You didn't provide an API key.", "type": "invalid_request_error", "param": None, "code": None}},
                status_code=401,
            )
        fault = state.http_faults[provider].take(request.method, path)
        if fault:
            headers = {"retry-after-ms": "20"}
            if fault["should_retry"] is not None:
                headers["x-should-retry"] = "true" if fault["should_retry"] else "false"
            kind = "rate_limit_exceeded" if fault["status"] == 429 else "server_error"
            message = "Rate limit reached for requests" if fault["status"] == 429 else "The server had an error processing your request."
            log.info("injected HTTP %s on %s %s", fault["status"], request.method, path)
            return JSONResponse(
                {"error": {"message": message, "type": kind, "param": None, "code": kind}},
                status_code=fault["status"],
                headers=headers,
            )
        return await call_next(request)

    app.include_router(openai_router(openai))

    @app.get(f"{ADMIN}/health")
    def health() -> dict[str, Any]:
        return {"ok": True}

    @app.get(f"{ADMIN}/faults")
    def get_faults() -> dict[str, Any]:
        return state.config.model_dump()

    @app.put(f"{ADMIN}/faults")
    def put_faults(config: FaultConfig) -> dict[str, Any]:
        state.configure(config)
        return config.model_dump()

    @app.get(f"{ADMIN}/fault-log")
    def fault_log() -> dict[str, Any]:
        return state.fault_log

    @app.get(f"{ADMIN}/calls")
    def calls() -> dict[str, int]:
        return dict(state.calls)

    return app
