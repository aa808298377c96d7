"""The classification task's HTTP routes: POST /v1/classify (labels with probabilities) and POST /v1/feedback
(a corrected label, stored durably for the next training run)."""

from __future__ import annotations

import torch
from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ..data import LabelMap
from ..data.dataset import Encoded, tokenize
from ..evaluate.inference import predict_logits
from ..settings import Strict


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


def classification_routes(server, decode) -> APIRouter:
    """`server`: the server core (serve/app.py `Server`); `decode(logits, label_map)`: the task's own."""
    router = APIRouter()

    def pairs() -> bool:
        return server.trained.meta.get("text_pair_column") is not None

    def prepare(texts: list[str], text_pairs: list[str] | None) -> list:
        """(ids, type ids, whether it was cut) per text: a text longer than the model's max_length is cut to
        it, as `tunecraft predict` and training cut it."""
        trained = server.trained
        max_length = trained.meta["max_length"]
        ids, types, lengths = tokenize(trained.tokenizer, texts, text_pairs, max_length)
        return [(x, types[i] if types else None, lengths[i] > max_length) for i, x in enumerate(ids)]

    def infer(items: list) -> list[dict]:
        trained = server.trained
        enc = Encoded([ids for ids, *_ in items], [t for _, t, _ in items] if items[0][1] is not None else None,
                      None, 0)
        logits = predict_logits(trained.model, enc, len(items), trained.tokenizer.pad_token_id,
                                torch.device("cpu"), server.dtype)
        return decode(logits, LabelMap(trained.meta["labels"]))

    def warm_up() -> None:
        for size in (1, 8):
            infer(prepare(["warm-up"] * size, ["warm-up"] * size if pairs() else None))

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
        items = prepare(req.texts, req.text_pairs)
        results = await server.submit(items)
        return ClassifyResponse(model=server.name, predictions=[Prediction(**r, truncated=item[2])
                                                                 for r, item in zip(results, items)])

    @router.post("/v1/feedback", response_model=FeedbackResponse, dependencies=[Depends(server.require_key)],
                 responses={401: {}, 422: {}})
    async def feedback(req: FeedbackRequest):
        labels = server.trained.meta["labels"]
        if req.label not in labels:
            raise HTTPException(422, f"unknown label '{req.label}'; the model knows: {', '.join(labels)}")
        row = server.feedback.add(req.text, req.label, req.prediction, req.text_pair, server.name)
        server.metrics.feedback.inc()
        return FeedbackResponse(id=row)

    return router
