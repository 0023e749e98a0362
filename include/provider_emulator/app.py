"""The emulator's HTTP app: one path prefix per provider, HTTP fault injection, admin endpoints.

``/openai/v1/...``, ``/anthropic/v1/...``, ``/vertex/...`` and ``/bedrock/...``: each SDK is
given the prefix as its base URL. Auth (and what else a provider requires of every request) is
checked the way each provider checks it, and refused with that provider's own answer (only the
presence of a credential is checked: any key works); an injected HTTP error looks like that
provider's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from provider_emulator import anthropic_api, bedrock_api, core, openai_api, vertex_api
from provider_emulator.faults import PROVIDERS, FaultConfig, HttpFaultQueue
from provider_emulator.storage import GCS, S3

log = logging.getLogger("provider_emulator")

ADMIN = "/_emulator"


@dataclass(frozen=True)
class Face:
    """How a provider checks every request and words an error."""

    prefix: str
    #: the provider's answer to a request it refuses before reading it (no credential, a
    #: required header missing), or ``None``
    refuse: Callable[[Request], Response | None]
    error: Callable[[int, str], Response]
    #: Stainless-generated SDKs (openai, anthropic) obey ``x-should-retry``; their servers send it.
    sends_should_retry: bool = False


def _bearer(request: Request) -> bool:
    return request.headers.get("authorization", "").startswith("Bearer ")


def _openai_error(status: int, message: str) -> Response:
    kind = "rate_limit_exceeded" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": kind}}, status_code=status)


def _openai_refuse(request: Request) -> Response | None:
    if _bearer(request):
        return None
    return JSONResponse(
        {
            "error": {
                "message": "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
        status_code=401,
    )


def _anthropic_refuse(request: Request) -> Response | None:
    if not (_bearer(request) or request.headers.get("x-api-key")):
        return anthropic_api.error(401, "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        return anthropic_api.error(400, "anthropic-version: header is required")
    return None


def _vertex_refuse(request: Request) -> Response | None:
    if _bearer(request):
        return None
    return vertex_api.error(
        401,
        "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or "
        "other valid authentication credential.",
    )


FACES: dict[str, Face] = {
    "openai": Face("/openai/", _openai_refuse, _openai_error, sends_should_retry=True),
    "anthropic": Face(
        "/anthropic/",
        _anthropic_refuse,
        lambda status, message: anthropic_api.error(status, message),
        sends_should_retry=True,
    ),
    "vertex": Face("/vertex/", _vertex_refuse, vertex_api.error),
    "bedrock": Face(
        "/bedrock/",
        bedrock_api.refuse_unsigned,
        lambda status, message: bedrock_api.error(status, message),
    ),
}

MESSAGES = {429: "Rate limit reached for requests", 529: "Overloaded"}


class EmulatorState:
    def __init__(self, config: FaultConfig):
        self.lock = threading.Lock()
        self.http_faults = {p: HttpFaultQueue() for p in PROVIDERS}
        self.slow_responses = {p: HttpFaultQueue() for p in PROVIDERS}
        self.fault_log: dict[str, dict[str, str]] = {p: {} for p in PROVIDERS}
        self.calls: Counter = Counter()
        #: every job ever created, per provider (deleting a job does not take it off)
        self.created: dict[str, list[str]] = {p: [] for p in PROVIDERS}
        #: seconds each provider spent validating and answering jobs (the provider's own time)
        self.busy: Counter = Counter()
        self.configure(config)

    def configure(self, config: FaultConfig) -> None:
        self.config = config
        core.forget_failures()
        for p in PROVIDERS:
            self.http_faults[p].load(getattr(config, p).http_errors)
            self.slow_responses[p].load(getattr(config, p).slow_responses)

    def log_fault(self, provider: str, key: str, fault: str) -> None:
        with self.lock:
            self.fault_log[provider][key] = fault


def provider_of(path: str) -> str | None:
    return next((name for name, face in FACES.items() if path.startswith(face.prefix)), None)


#: The header each service names its request with (Vertex puts a ``responseId`` in the body instead).
REQUEST_ID_HEADERS = {
    "openai": ("x-request-id", lambda: f"req_{secrets.token_hex(16)}"),
    "anthropic": ("request-id", lambda: f"req_{secrets.token_hex(12)}"),
    "bedrock": ("x-amzn-RequestId", lambda: str(uuid.uuid4())),
}


def create_app(  # noqa: C901 - its endpoints are counted as one function
    config: FaultConfig | None = None,
    *,
    gcs_url: str,
    s3_url: str,
    on_ready: Callable[[], None] | None = None,
) -> FastAPI:
    """The app; ``gcs_url`` and ``s3_url`` are the storage servers the Vertex and Bedrock jobs use."""
    state = EmulatorState(config or FaultConfig())

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        if on_ready:
            on_ready()  # the socket is bound by now
        yield

    app = FastAPI(title="batch-ai provider emulator", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.emulator = state

    @app.middleware("http")
    async def faults_and_auth(request: Request, call_next):
        path = request.url.path
        provider = provider_of(path)
        if provider is None:
            return await call_next(request)
        face = FACES[provider]
        state.calls[f"{request.method} {path}"] += 1
        refused = face.refuse(request)
        if refused is not None:
            return refused
        api_path = path.removeprefix(face.prefix.rstrip("/"))
        fault = state.http_faults[provider].take(request.method, api_path)
        if fault:
            log.info("injected HTTP %s on %s %s", fault["status"], request.method, path)
            response = face.error(
                fault["status"], MESSAGES.get(fault["status"], "The server had an error processing your request.")
            )
            response.headers["retry-after-ms"] = "20"
            response.headers["retry-after"] = "0"
            if face.sends_should_retry and fault["should_retry"] is not None:
                response.headers["x-should-retry"] = "true" if fault["should_retry"] else "false"
            return response
        response = await call_next(request)
        if provider in REQUEST_ID_HEADERS:  # as the services do: the id support asks for
            header, make = REQUEST_ID_HEADERS[provider]
            response.headers[header] = make()
        delay = state.slow_responses[provider].take(request.method, api_path)
        if delay:  # served, and the answer is slow to come back (a connection that hangs)
            log.info("holding the answer to %s %s for %ss", request.method, path, delay["seconds"])
            await asyncio.sleep(delay["seconds"])
        return response

    emulators = {
        "openai": openai_api.OpenAIEmulator(state),
        "anthropic": anthropic_api.AnthropicEmulator(state),
        "vertex": vertex_api.VertexEmulator(state, GCS(gcs_url)),
        "bedrock": bedrock_api.BedrockEmulator(state, S3(s3_url)),
    }
    for name, module in (
        ("openai", openai_api),
        ("anthropic", anthropic_api),
        ("vertex", vertex_api),
        ("bedrock", bedrock_api),
    ):
        app.include_router(module.router(emulators[name]))

    @app.get(f"{ADMIN}/jobs")
    def jobs() -> dict[str, list[str]]:
        """The ids of the jobs each provider holds (what a test counts to prove nothing was paid twice)."""
        return {
            "openai": list(emulators["openai"].batches),
            "anthropic": list(emulators["anthropic"].batches),
            "vertex": list(emulators["vertex"].jobs),
            "bedrock": list(emulators["bedrock"].jobs),
        }

    @app.get(f"{ADMIN}/created")
    def created() -> dict[str, list[str]]:
        """Every job each provider ever created, deleted ones too: a second create for the same
        work shows here (what a test counts to prove nothing was paid twice)."""
        return state.created

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

    @app.get(f"{ADMIN}/busy")
    def busy() -> dict[str, float]:
        return dict(state.busy)

    @app.get(f"{ADMIN}/calls")
    def calls() -> dict[str, int]:
        return dict(state.calls)

    return app
