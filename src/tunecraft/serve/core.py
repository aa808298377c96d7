"""The server core a task's routes build on (`Server`), reached in a route through the typed dependency
`ServerDep` (the app keeps its server in `app.state.server`), and the Prometheus metrics it counts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from prometheus_client import CollectorRegistry, Counter, Histogram

from ..runs import read_meta
from ..runtime.precision import resolve as resolve_precision
from ..tasks import build_task
from ..trained import load_trained
from . import guards
from .batching import MicroBatcher
from .feedback import FeedbackStore
from .precision import serving_model
from .settings import ServeSettings

logger = logging.getLogger("tunecraft.serve")


class Server:
    """What a task's routes (serve/routes/) build on: the settings, the run's model once loaded (`trained`,
    `dtype`, `name`), the micro-batcher (`serve_batches` registers the task's batch function, `submit` queues
    items), the API-key check, the request-size check, the feedback store and the Prometheus metrics."""

    def __init__(self, settings: ServeSettings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.task = build_task(read_meta(settings.run))
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
        self._loaded = None
        self.batcher: MicroBatcher | None = None
        self.openai_paths: list[str] = []
        """Path prefixes whose errors take the OpenAI API's shape (the task's routes add theirs)."""
        self.facets: dict[str, object] = {}
        """What a route module keeps across requests (the OpenAI routes' decode loop), by the module's name."""

    def openai_shaped(self, path: str) -> bool:
        return path.startswith(tuple(self.openai_paths))

    def serve_batches(self, infer, warm_up, load=None) -> None:
        """`infer(items) -> results` runs batches of prepared request items on the inference thread (None: the
        routes schedule their own work there with `batcher.run`, as generation's decode loop does);
        `warm_up()` runs there once the model is loaded; `load(run) -> TrainedModel` loads it (default:
        load_trained)."""
        self._infer, self._warm_up, self._load = infer, warm_up, load or load_trained

    def wrap_batches(self, wrap) -> None:
        """Replace the batch function with `wrap(current)` (current: None where the routes schedule their own
        work): the route every task brings (serve/routes/predict.py) batches its items beside the task's."""
        self._infer = wrap(self._infer)

    def serve_predict(self, warm_up_item: Callable[[], object]) -> None:
        """Serve batches of request items through the task's own `predict` (so an item is read as `tunecraft
        predict` reads it), warmed up on batches of 1 and 8 copies of `warm_up_item()` (called once the model
        is loaded)."""
        def infer(items: list) -> list[dict]:
            return self.task.predict(self.trained, items, len(items), self.dtype, warn=False)

        def warm_up() -> None:
            for size in (1, 8):
                infer([warm_up_item()] * size)

        self.serve_batches(infer, warm_up)

    def preload(self) -> None:
        """Load the model now, before the port is bound (`tunecraft serve` fails fast on a broken run folder);
        `start` then casts this one instead of loading it a second time."""
        self._loaded = self._load(self.settings.run)

    async def start(self) -> None:
        s = self.settings
        self.batcher = MicroBatcher(self._infer, s.max_batch_size if s.batching else 1,
                                    s.max_wait_ms if s.batching else 0, self.metrics.on_batch)
        loaded, self._loaded = self._loaded, None
        # cast (and, unless preloaded, loaded) on the inference thread, like every torch call (serve/batching.py)
        self.trained, self.dtype = await self.batcher.run(
            lambda: serving_model(loaded or self._load(s.run), s.precision, self.task.AUTO_PRECISION))
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

    def check_texts(self, texts: list[str]) -> None:
        """check_count, then 422 for a text that is empty or only white space."""
        self.check_count(texts)
        for i, text in enumerate(texts):
            if not text.strip():
                raise HTTPException(422, f"texts[{i}] is empty")

    def require_key(self, request: Request) -> None:
        """The routes' own check; guards.RequestGuard already refused a request without the key, before its body."""
        key = self.settings.api_key
        if key is not None and not guards.key_matches(dict(request.scope["headers"]), key):
            raise HTTPException(401, guards.KEY_MESSAGE, headers={"WWW-Authenticate": "Bearer"})


def current_server(request: Request) -> Server:
    """The server of the app the request reached (a studio mounts one app per run: each has its own)."""
    return request.app.state.server


ServerDep = Annotated[Server, Depends(current_server)]
"""A route's server core, as a FastAPI dependency."""


def require_key(request: Request) -> None:
    """The API-key check as a route (or router) dependency."""
    current_server(request).require_key(request)


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
