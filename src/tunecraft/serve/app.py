"""The HTTP server for a run folder: the core (limits, API-key auth, Prometheus metrics, access logs, /health)
and the routes the run's task brings (Task.routes: serve/classify.py, serve/entities.py)."""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..cpus import default_threads, usable_cpus
from ..errors import TunecraftError
from ..runs import read_meta
from ..runtime.precision import resolve as resolve_precision
from ..tasks import get_task
from ..trained import load_trained
from . import guards, openai_errors
from .batching import MicroBatcher
from .feedback import FeedbackStore
from .precision import serving_model
from .settings import ServeSettings
from .site_guard import SiteGuard

access_log = logging.getLogger("tunecraft.access")
logger = logging.getLogger("tunecraft.serve")


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


# -- the server core a task's routes use ------------------------------------------------------------------

class Server:
    """What a task's routes (Task.routes) build on: the settings, the run's model once loaded (`trained`,
    `dtype`, `name`), the micro-batcher (`serve_batches` registers the task's batch function, `submit` queues
    items), the API-key check, the request-size check, the feedback store and the Prometheus metrics."""

    def __init__(self, settings: ServeSettings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.task = get_task(read_meta(settings.run)["task"])
        self.name = str(Path(settings.run).resolve().name)
        _, self.dtype = resolve_precision(settings.precision, self.task.AUTO_PRECISION)
        if self.dtype is not None and self.task.AUTO_PRECISION == "fp32":
            logger.warning("--precision %s: faster decoding, but greedy answers can differ from `tunecraft predict` "
                           "and change with the requests sharing a batch; the default (fp32) answers as the run at "
                           "any concurrency (docs/serving.md)", settings.precision)
        self.trained = None
        self.feedback: FeedbackStore | None = None
        self.ready = False
        self._infer, self._warm_up, self._load = None, None, load_trained
        self.batcher: MicroBatcher | None = None
        self.openai_paths: list[str] = []
        """Path prefixes whose errors take the OpenAI API's shape (the task's routes add theirs)."""

    def openai_shaped(self, path: str) -> bool:
        return path.startswith(tuple(self.openai_paths))

    def serve_batches(self, infer, warm_up, load=None) -> None:
        """`infer(items) -> results` runs batches of prepared request items on the inference thread (None: the
        routes schedule their own work there with `batcher.run`, as generation's decode loop does);
        `warm_up()` runs there once the model is loaded; `load(run) -> TrainedModel` loads it (default:
        load_trained)."""
        self._infer, self._warm_up, self._load = infer, warm_up, load or load_trained

    async def start(self) -> None:
        s = self.settings
        self.batcher = MicroBatcher(self._infer, s.max_batch_size if s.batching else 1,
                                    s.max_wait_ms if s.batching else 0, self.metrics.on_batch)
        # loaded and cast on the inference thread, like every torch call (serve/batching.py)
        self.trained, self.dtype = await self.batcher.run(lambda: serving_model(self._load(s.run), s.precision,
                                                                                self.task.AUTO_PRECISION))
        if self._warm_up is not None:
            await self.batcher.run(self._warm_up)
        self.batcher.start()
        self.feedback = FeedbackStore(s.feedback_db or Path(s.run) / "feedback.sqlite")
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop()
        self.feedback.close()

    async def submit(self, items: list) -> list:
        return await self.batcher.submit(items)

    def check_count(self, texts: list) -> None:
        if len(texts) > self.settings.max_texts:
            raise HTTPException(413, f"{len(texts)} texts in one request; the limit is {self.settings.max_texts}")

    def require_key(self, request: Request) -> None:
        """The routes' own check; guards.RequestGuard already refused a request without the key, before its body."""
        key = self.settings.api_key
        if key is not None and not guards.key_matches(dict(request.scope["headers"]), key):
            raise HTTPException(401, guards.KEY_MESSAGE, headers={"WWW-Authenticate": "Bearer"})


# -- metrics ------------------------------------------------------------------------------------------------

class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("tunecraft_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.errors = Counter("tunecraft_errors", "HTTP responses with status >= 400", ["route", "status"],
                              registry=self.registry)
        self.latency = Histogram("tunecraft_request_latency_seconds", "Request latency", ["route"],
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self.batch_size = Histogram("tunecraft_batch_size", "Items per model forward pass",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.inference = Histogram("tunecraft_inference_seconds", "Model forward time per batch",
                                   buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1), registry=self.registry)
        self.feedback = Counter("tunecraft_feedback", "Feedback records stored", registry=self.registry)

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)


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



def create_app(settings: ServeSettings) -> FastAPI:
    """The app: the core routes (/health, /metrics), limits, auth and access logs, and the routes the run's task
    brings (Task.routes); the model loads in the lifespan, on the inference thread."""
    configure_access_log()
    metrics = Metrics()
    server = Server(settings, metrics)
    router = server.task.routes(server)
    if router is None:
        raise TunecraftError(f"{settings.run}: {server.task.NAME} runs cannot be served yet (the task brings no "
                             "HTTP routes)")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await server.start()
        yield
        await server.stop()

    # the run folder's name only: its path says where the server keeps its files
    # /docs and /redoc from assets inside the fastapi-offline package: Swagger UI's CDN is not reachable offline
    app = FastAPIOffline(title="tunecraft", version="1", lifespan=lifespan,
                  description=f"Serving the tunecraft run {Path(settings.run).resolve().name}")
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

    load_trained(settings.run)  # fail fast, with a clear message, before binding the port
    # access_log=False: our structured access log (one JSON line per request) replaces uvicorn's
    # uvicorn times out idle keep-alive connections and caps connections; it has no timeout for a client that
    # never finishes its headers (docs/serving.md: put a proxy in front); the body timeout is guards'
    common = dict(host=settings.host, port=settings.port, timeout_graceful_shutdown=settings.drain_seconds,
                  log_level="info", access_log=False, timeout_keep_alive=settings.keep_alive,
                  limit_concurrency=settings.max_connections)
    if settings.workers > 1:
        os.environ[SETTINGS_ENV] = settings.model_dump_json()
        uvicorn.run("tunecraft.serve.app:app_from_env", factory=True, workers=settings.workers, **common)
    else:
        torch.set_num_threads(default_threads())
        uvicorn.run(create_app(settings), **common)
