"""The HTTP server for a run folder: FastAPI routes, limits, API-key auth, Prometheus metrics, access logs."""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from ..data import LabelMap
from ..data.ner import Sentence, split_words
from ..models import load_trained
from ..tasks import get_task
from ..train.precision import resolve as resolve_precision
from .batching import MicroBatcher
from .feedback import FeedbackStore

access_log = logging.getLogger("tunecraft.access")


def configure_access_log() -> None:
    """One JSON object per request on stderr, whatever logging the host process set up."""
    if not access_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: str
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    batching: bool = True
    max_batch_size: int = Field(32, ge=1)
    max_wait_ms: float = Field(0.0, ge=0)
    """Extra wait for a fuller batch; 0 batches only what queued up while the last batch ran."""
    max_body_bytes: int = Field(1_000_000, ge=1)
    max_texts: int = Field(64, ge=1)
    max_input_tokens: int = Field(512, ge=1)
    """Texts longer than this many tokens are refused (422); shorter ones are cut to the model's max_length (or
    read as windows: model.long_documents), exactly as `tunecraft predict` does."""
    api_key: str | None = None
    feedback_db: str | None = None
    """Default: <run>/feedback.sqlite."""
    precision: str = "auto"
    drain_seconds: float = Field(30, ge=0)


# -- request and response types ---------------------------------------------------------------------------

class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"texts": ["a gorgeous, witty film"]}})
    texts: list[str] = Field(min_length=1)
    text_pairs: list[str] | None = None


class Prediction(BaseModel):
    label: str
    score: float
    probabilities: dict[str, float]


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Prediction]


class EntitiesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"example": {"texts": ["Ana Lima flew to New York."]}})
    texts: list[str] = Field(min_length=1)


class Entity(BaseModel):
    type: str
    start: int
    """Character offset of the first character in the text."""
    end: int
    """One past the last character."""
    text: str
    score: float


class TaggedText(BaseModel):
    entities: list[Entity]
    tokens: list[str]
    tags: list[str]


class EntitiesResponse(BaseModel):
    model: str
    results: list[TaggedText]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)
    text_pair: str | None = None
    prediction: str | None = None
    label: str = Field(min_length=1)


class FeedbackResponse(BaseModel):
    id: int
    stored: bool = True


class Health(BaseModel):
    status: str
    ready: bool
    model: str
    task: str
    labels: list[str]
    batching: bool


# -- the model behind the endpoint ------------------------------------------------------------------------

class ClassifierService:
    """Tokenizes and checks requests; runs batches of pre-tokenized items through the model. A token
    classification (NER) model's items are sentences split into words, and its results are entities."""

    def __init__(self, settings: ServeSettings):
        trained = load_trained(settings.run)
        self.trained = trained
        self.model, self.tokenizer, self.meta = trained.model, trained.tokenizer, trained.meta
        self.name = str(Path(settings.run).resolve().name)
        self.labels = LabelMap(self.meta["labels"])
        self.task = get_task(self.meta["task"])
        self.pairs = self.meta.get("text_pair_column") is not None
        self.max_input_tokens = settings.max_input_tokens
        _, self.dtype = resolve_precision(settings.precision)

    @property
    def ner(self) -> bool:
        return self.meta["task"] == "token_classification"

    def warm_up(self) -> None:
        for size in (1, 8):
            self.infer(self.tokenize(["warm-up"] * size, ["warm-up"] * size if self.pairs else None))

    def tokenize(self, texts: list[str], pairs: list[str] | None) -> list:
        if self.ner:
            return self.split(texts)
        lengths = [len(ids) for ids in self.tokenizer(texts, pairs)["input_ids"]]
        for i, n in enumerate(lengths):
            if n > self.max_input_tokens:
                raise HTTPException(422, f"texts[{i}] has {n} tokens; the limit is {self.max_input_tokens}")
        return [(text, pairs[i] if pairs else None) for i, text in enumerate(texts)]

    def split(self, texts: list[str]) -> list[Sentence]:
        sentences = []
        for i, text in enumerate(texts):
            words, offsets = split_words(text)
            n = len(self.tokenizer(words, is_split_into_words=True)["input_ids"])
            if n > self.max_input_tokens:
                raise HTTPException(422, f"texts[{i}] has {n} tokens; the limit is {self.max_input_tokens}")
            sentences.append(Sentence(words, None, given_text=text, given_offsets=offsets))
        return sentences

    def infer(self, items: list) -> list[dict]:
        if self.ner:
            return self.task.predict_sentences(self.trained, items, len(items), self.dtype)
        # through the task, which encodes as the run was trained (cut, or windows pooled: long_documents)
        pairs = [p for _, p in items] if items[0][1] is not None else None
        return self.task.predict(self.trained, [t for t, _ in items], len(items), self.dtype, pairs, warn=False)


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


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for a body over the limit, by Content-Length or by counting a streamed body."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send):
        body = json.dumps({"detail": f"request body is larger than {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# -- the app ------------------------------------------------------------------------------------------------

def create_app(settings: ServeSettings) -> FastAPI:
    configure_access_log()
    metrics = Metrics()
    state: dict = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = MicroBatcher(None, settings.max_batch_size if settings.batching else 1,
                               settings.max_wait_ms if settings.batching else 0, metrics.on_batch)
        service = await batcher.run(ClassifierService, settings)
        batcher.infer = service.infer
        await batcher.run(service.warm_up)
        batcher.start()
        feedback = FeedbackStore(settings.feedback_db or Path(settings.run) / "feedback.sqlite")
        state.update(service=service, batcher=batcher, feedback=feedback, ready=True)
        yield
        state["ready"] = False
        await batcher.stop()
        feedback.close()

    app = FastAPI(title="tunecraft", version="1", lifespan=lifespan,
                  description=f"Serving the tunecraft run {settings.run}")
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)  # inside `observe`, so 413s are counted

    def require_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:]
        if given is None or not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise HTTPException(401, "missing or wrong API key (send it as X-API-Key or Authorization: Bearer)",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = route.path if route is not None else "other"
            seconds = time.perf_counter() - start
            metrics.requests.labels(path, str(status)).inc()
            metrics.latency.labels(path).observe(seconds)
            if status >= 400:
                metrics.errors.labels(path, str(status)).inc()
            access_log.info(json.dumps({
                "ts": round(time.time(), 3), "method": request.method, "path": request.url.path,
                "status": status, "latency_ms": round(seconds * 1000, 2),
                "client": request.client.host if request.client else None, "pid": os.getpid(),
            }))

    @app.get("/health", response_model=Health, responses={503: {"description": "loaded but not ready"}})
    async def health():
        service = state.get("service")
        body = Health(status="ok" if state["ready"] else "starting", ready=state["ready"],
                      model=service.name if service else "", task=service.meta["task"] if service else "",
                      labels=service.labels.labels if service else [], batching=settings.batching)
        return JSONResponse(body.model_dump(), status_code=200 if state["ready"] else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/classify", response_model=ClassifyResponse, dependencies=[Depends(require_key)],
              responses={401: {}, 413: {}, 422: {}})
    async def classify(req: ClassifyRequest):
        service: ClassifierService = state["service"]
        if service.ner:
            raise HTTPException(404, "this model tags entities: use POST /v1/entities")
        if len(req.texts) > settings.max_texts:
            raise HTTPException(413, f"{len(req.texts)} texts in one request; the limit is {settings.max_texts}")
        for i, text in enumerate(req.texts):
            if not text.strip():
                raise HTTPException(422, f"texts[{i}] is empty")
        if service.pairs != (req.text_pairs is not None):
            need = "needs text_pairs (one per text)" if service.pairs else "takes no text_pairs"
            raise HTTPException(422, f"this model {need}")
        if req.text_pairs is not None and len(req.text_pairs) != len(req.texts):
            raise HTTPException(422, f"{len(req.text_pairs)} text_pairs for {len(req.texts)} texts")
        items = service.tokenize(req.texts, req.text_pairs)
        results = await state["batcher"].submit(items)
        return ClassifyResponse(model=service.name, predictions=[Prediction(**r) for r in results])

    @app.post("/v1/entities", response_model=EntitiesResponse, dependencies=[Depends(require_key)],
              responses={401: {}, 404: {}, 413: {}, 422: {}})
    async def entities(req: EntitiesRequest):
        service: ClassifierService = state["service"]
        if not service.ner:
            raise HTTPException(404, "this model classifies texts: use POST /v1/classify")
        if len(req.texts) > settings.max_texts:
            raise HTTPException(413, f"{len(req.texts)} texts in one request; the limit is {settings.max_texts}")
        for i, text in enumerate(req.texts):
            if not split_words(text)[0]:
                raise HTTPException(422, f"texts[{i}] has no words")
        results = await state["batcher"].submit(service.tokenize(req.texts, None))
        return EntitiesResponse(model=service.name, results=[TaggedText(**r) for r in results])

    @app.post("/v1/feedback", response_model=FeedbackResponse, dependencies=[Depends(require_key)],
              responses={401: {}, 422: {}})
    async def feedback(req: FeedbackRequest):
        service: ClassifierService = state["service"]
        if service.ner:
            raise HTTPException(404, "feedback is stored for classification models only")
        if req.label not in service.labels.labels:
            known = ", ".join(service.labels.labels)
            raise HTTPException(422, f"unknown label '{req.label}'; the model knows: {known}")
        row = state["feedback"].add(req.text, req.label, req.prediction, req.text_pair, service.name)
        metrics.feedback.inc()
        return FeedbackResponse(id=row)

    return app


SETTINGS_ENV = "TUNECRAFT_SERVE_SETTINGS"


def app_from_env() -> FastAPI:
    """Factory for uvicorn's worker processes (--workers > 1): settings travel in an environment variable.
    Each worker gets an equal share of the cores for torch, so N workers do not oversubscribe them."""
    settings = ServeSettings.model_validate_json(os.environ[SETTINGS_ENV])
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))
    return create_app(settings)


def serve(settings: ServeSettings) -> None:
    import uvicorn

    ClassifierService(settings)  # fail fast, with a clear message, before binding the port
    # access_log=False: our structured access log (one JSON line per request) replaces uvicorn's
    common = dict(host=settings.host, port=settings.port, timeout_graceful_shutdown=settings.drain_seconds,
                  log_level="info", access_log=False)
    if settings.workers > 1:
        os.environ[SETTINGS_ENV] = settings.model_dump_json()
        uvicorn.run("tunecraft.serve.app:app_from_env", factory=True, workers=settings.workers, **common)
    else:
        uvicorn.run(create_app(settings), **common)
