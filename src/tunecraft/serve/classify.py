"""The classification task's HTTP routes: POST /v1/classify (labels with probabilities) and POST /v1/feedback
(a corrected label, stored durably for the next training run)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ..settings import Strict
from .feedback import unknown_label


class ClassifyRequest(Strict):
    model_config = ConfigDict(json_schema_extra={"example": {"texts": ["a gorgeous, witty film"]}})
    texts: list[str] = Field(min_length=1)
    text_pairs: list[str] | None = None


class Prediction(BaseModel):
    label: str
    score: float
    probabilities: dict[str, float]
    truncated: bool = False
    """The text (with its pair) was longer than the model's max_length tokens and only its start was read."""


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Prediction]


class FeedbackRequest(Strict):
    text: str = Field(min_length=1)
    text_pair: str | None = None
    prediction: str | None = None
    label: str = Field(min_length=1)


class FeedbackResponse(BaseModel):
    id: int
    stored: bool = True


def classification_routes(server, predict) -> APIRouter:
    """`server`: the server core (serve/app.py `Server`); `predict(trained, texts, batch_size, dtype, pairs,
    warn)`: the task's own, so a text is read as `tunecraft predict` reads it (cut to max_length, or as pooled
    windows for a run trained with model.long_documents=windows)."""
    router = APIRouter()

    def pairs() -> bool:
        return server.trained.meta.get("text_pair_column") is not None

    def infer(items: list[tuple[str, str | None]]) -> list[dict]:
        text_pairs = [p for _, p in items] if items[0][1] is not None else None
        return predict(server.trained, [t for t, _ in items], len(items), server.dtype, text_pairs, warn=False)

    def warm_up() -> None:
        for size in (1, 8):
            infer([("warm-up", "warm-up" if pairs() else None)] * size)

    server.serve_batches(infer, warm_up)

    @router.post("/v1/classify", response_model=ClassifyResponse, dependencies=[Depends(server.require_key)],
                 responses={401: {}, 413: {}, 422: {}})
    async def classify(req: ClassifyRequest):
        server.check_count(req.texts)
        for i, text in enumerate(req.texts):
            if not text.strip():
                raise HTTPException(422, f"texts[{i}] is empty")
        if pairs() != (req.text_pairs is not None):
            need = "needs text_pairs (one per text)" if pairs() else "takes no text_pairs"
            raise HTTPException(422, f"this model {need}")
        if req.text_pairs is not None and len(req.text_pairs) != len(req.texts):
            raise HTTPException(422, f"{len(req.text_pairs)} text_pairs for {len(req.texts)} texts")
        items = [(text, req.text_pairs[i] if req.text_pairs else None) for i, text in enumerate(req.texts)]
        results = await server.submit(items)
        return ClassifyResponse(model=server.name, predictions=[Prediction(**r) for r in results])

    @router.post("/v1/feedback", response_model=FeedbackResponse, dependencies=[Depends(server.require_key)],
                 responses={401: {}, 422: {}})
    async def feedback(req: FeedbackRequest):
        labels = server.trained.meta["labels"]
        if req.label not in labels:
            raise HTTPException(422, unknown_label(req.label, labels))
        row = server.feedback.add(req.text, req.label, req.prediction, req.text_pair, server.name)
        server.metrics.feedback.inc()
        return FeedbackResponse(id=row)

    return router
