"""The HTTP server for a run folder: the core (limits, API-key auth, Prometheus metrics, access logs, /health)
and the routes the run's task brings (the registry in serve/routes/: classify, entities, reward, OpenAI)."""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..cpus import default_threads, usable_cpus
from ..trained import load_trained
from . import guards, openai_errors
from .core import Metrics, Server
from .routes import routes_of
from .settings import ServeSettings
from .site_guard import SiteGuard

access_log = logging.getLogger("tunecraft.access")


def configure_access_log() -> None:
    """One JSON object per request on stderr, whatever logging the host process set up."""
    if not access_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False


# -- the core's own routes ---------------------------------------------------------------------------------

class Health(BaseModel):
    status: str
    ready: bool
    model: str
    task: str
    labels: list[str]
    batching: bool


class Observe:
    """Every request's metrics and its JSON access log line. A plain ASGI middleware: Starlette's
    BaseHTTPMiddleware (`@app.middleware("http")`) runs each request through a task group and memory streams,
    0.13 ms a request against this one's 0.03 ms (2026-11-28, in-process ASGI calls of an empty route)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            # a task's routes come in through include_router, whose match may be the included router itself;
            # its routes have no path parameters, so the URL's path is the route's
            path = "other" if route is None else (getattr(route, "path", None) or scope["path"])
            seconds = time.perf_counter() - start
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(seconds)
            if status >= 400:
                self.metrics.errors.labels(path, str(status)).inc()
            client = scope.get("client")
            access_log.info(json.dumps({
                "ts": round(time.time(), 3), "method": scope["method"], "path": scope["path"],
                "status": status, "latency_ms": round(seconds * 1000, 2),
                "client": client[0] if client else None, "pid": os.getpid(),
            }))


# -- the app ------------------------------------------------------------------------------------------------
def route_paths(routes, prefix: str = ""):
    """The paths a router serves, through the routers it includes (FastAPI keeps an included router as one
    route without a `path`, which made every unknown path on a classification server a 500)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from route_paths(included.routes, prefix + route.include_context.prefix)
        elif hasattr(route, "path"):
            yield prefix + route.path



def task_router(server: Server) -> APIRouter:
    """The routes the registry (serve/routes/) names for the run's task, each module set up on `server` (every
    task has at least /v1/predict)."""
    facets = routes_of(server.task.NAME)
    router = APIRouter()
    for facet in facets:
        facet.setup(server)
        router.include_router(facet.router)
    return router


def create_app(settings: ServeSettings) -> FastAPI:
    """The app: the core routes (/health, /metrics), limits, auth and access logs, and the routes the run's task
    brings (serve/routes/); the model loads in the lifespan, on the inference thread, unless `Server.preload`
    loaded it before (`app.state.server`)."""
    configure_access_log()
    metrics = Metrics()
    server = Server(settings, metrics)
    router = task_router(server)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await server.start()
        yield
        await server.stop()

    # the run folder's name only: its path says where the server keeps its files
    # /docs and /redoc from assets inside the fastapi-offline package: Swagger UI's CDN is not reachable offline
    app = FastAPIOffline(title="tunecraft", version="1", lifespan=lifespan,
                  description=f"Serving the tunecraft run {Path(settings.run).resolve().name}")
    app.state.server = server  # the routes' dependency (serve/core.py ServerDep)
    guards.install(app, settings.max_body_bytes, settings.body_timeout, settings.api_key,  # inside Observe
                   server.openai_shaped)
    app.add_middleware(SiteGuard, bound=settings.host, allowed=settings.allowed_hosts)  # first: before the key
    app.add_middleware(Observe, metrics=metrics)

    @app.exception_handler(StarletteHTTPException)
    async def not_found(request: Request, exc: StarletteHTTPException):
        """A route this run's task does not bring: say which routes it serves."""
        if exc.status_code == 404 and exc.detail == "Not Found":
            served = sorted({"/health", "/metrics", *route_paths(router.routes)})
            detail = (f"no route {request.method} {request.url.path} for this {server.task.NAME} run; it serves: "
                      f"{', '.join(served)}")
            return JSONResponse({"detail": detail}, status_code=404)
        return await guards.http_error(request, exc)

    openai_errors.install(app, server.openai_shaped)  # after the handlers it wraps

    @app.get("/health", response_model=Health, responses={503: {"description": "loaded but not ready"}})
    async def health():
        meta = server.trained.meta if server.trained else {}
        body = Health(status="ok" if server.ready else "starting", ready=server.ready, model=server.name,
                      task=server.task.NAME, labels=meta.get("labels", []), batching=settings.batching)
        return JSONResponse(body.model_dump(), status_code=200 if server.ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
    return app


SETTINGS_ENV = "TUNECRAFT_SERVE_SETTINGS"


def app_from_env() -> FastAPI:
    """Factory for uvicorn's worker processes (--workers > 1): settings travel in an environment variable.
    Each worker gets an equal share of the usable CPUs for torch, so N workers do not oversubscribe them."""
    settings = ServeSettings.model_validate_json(os.environ[SETTINGS_ENV])
    torch.set_num_threads(max(1, usable_cpus() // settings.workers))
    return create_app(settings)


def serve(settings: ServeSettings) -> None:
    import uvicorn

    # access_log=False: our structured access log (one JSON line per request) replaces uvicorn's
    # uvicorn times out idle keep-alive connections and caps connections; it has no timeout for a client that
    # never finishes its headers (docs/serving.md: put a proxy in front); the body timeout is guards'
    common = dict(host=settings.host, port=settings.port, timeout_graceful_shutdown=settings.drain_seconds,
                  log_level="info", access_log=False, timeout_keep_alive=settings.keep_alive,
                  limit_concurrency=settings.max_connections)
    if settings.workers > 1:
        load_trained(settings.run)  # fail fast, with a clear message, before binding the port (each worker loads)
        os.environ[SETTINGS_ENV] = settings.model_dump_json()
        uvicorn.run("tunecraft.serve.app:app_from_env", factory=True, workers=settings.workers, **common)
    else:
        torch.set_num_threads(default_threads())
        app = create_app(settings)
        app.state.server.preload()  # fail fast before binding the port; the lifespan casts this one, loads none
        uvicorn.run(app, **common)
