"""The classification task's HTTP routes: POST /v1/classify (labels with probabilities) and POST /v1/feedback
(a corrected label, stored durably for the next training run)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ...settings import Strict
from ..core import Server, ServerDep, require_key
from ..feedback import unknown_label


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


def _pairs(server: Server) -> bool:
    return server.trained.meta.get("text_pair_column") is not None


def setup(server: Server) -> None:
    server.serve_predict(lambda: {"text": "warm-up", "text_pair": "warm-up" if _pairs(server) else None})


router = APIRouter(dependencies=[Depends(require_key)])


@router.post("/v1/classify", response_model=ClassifyResponse, responses={401: {}, 413: {}, 422: {}})
async def classify(req: ClassifyRequest, server: ServerDep):
    server.check_texts(req.texts)
    if _pairs(server) != (req.text_pairs is not None):
        need = "needs text_pairs (one per text)" if _pairs(server) else "takes no text_pairs"
        raise HTTPException(422, f"this model {need}")
    if req.text_pairs is not None and len(req.text_pairs) != len(req.texts):
        raise HTTPException(422, f"{len(req.text_pairs)} text_pairs for {len(req.texts)} texts")
    items = [{"text": text, "text_pair": req.text_pairs[i] if req.text_pairs else None}
             for i, text in enumerate(req.texts)]
    results = await server.submit(items)
    return ClassifyResponse(model=server.name, predictions=[Prediction(**r) for r in results])


@router.post("/v1/feedback", response_model=FeedbackResponse, responses={401: {}, 422: {}})
async def feedback(req: FeedbackRequest, server: ServerDep):
    labels = server.trained.meta["labels"]
    if req.label not in labels:
        raise HTTPException(422, unknown_label(req.label, labels))
    row = server.feedback.add(req.text, req.label, req.prediction, req.text_pair, server.name)
    server.metrics.feedback.inc()
    return FeedbackResponse(id=row)
