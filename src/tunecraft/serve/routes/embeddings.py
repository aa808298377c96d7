"""POST /v1/embeddings in the OpenAI API's shape, for encoder runs: the mean-pooled, L2-normalised last hidden
states of the run's encoder, as the baselines' `embed` (evaluate/baselines.py) computes them."""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
import torch
from fastapi import APIRouter, Depends
from pydantic import ConfigDict, Field

from ...evaluate.baselines import embed
from ...runtime.inference import autocast_context
from ...settings import Strict
from ..core import Server, ServerDep, require_key
from .openai import error


class EmbeddingRequest(Strict):
    model_config = ConfigDict(json_schema_extra={"example": {"model": "RUN",
                                                                             "input": ["a gorgeous, witty film"]}})
    model: str
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None


def run_embeddings(trained, texts: list[str], dtype=None):
    """The run's own pooled embeddings of `texts` (its encoder under the task head), cut to its max_length;
    under autocast to `dtype` where the server holds bf16 weights (serve/precision.py)."""
    with torch.no_grad(), autocast_context(trained.model.device, dtype):
        vectors = embed(trained.model.base_model, trained.tokenizer, texts, max_length=trained.meta["max_length"])
    return vectors.float()


def setup(server: Server) -> None:
    server.openai_paths.append("/v1/embeddings")


router = APIRouter(dependencies=[Depends(require_key)])


@router.post("/v1/embeddings", responses={401: {}, 404: {}, 422: {}})
async def embeddings(req: EmbeddingRequest, server: ServerDep):
    settings = server.settings
    if req.model != server.name:
        return error(404, f"the model '{req.model}' does not exist; this server serves: {server.name}",
                     "model_not_found", "model")
    texts = [req.input] if isinstance(req.input, str) else req.input
    if len(texts) > settings.max_texts:
        return error(413, f"{len(texts)} inputs in one request; the limit is {settings.max_texts}",
                     "too_many_inputs", "input")
    lengths = [len(ids) for ids in server.trained.tokenizer(texts)["input_ids"]]
    for i, n in enumerate(lengths):
        if not texts[i].strip():
            return error(422, f"input[{i}] is empty", "empty_input", "input")
        if n > settings.max_input_tokens:
            return error(422, f"input[{i}] has {n} tokens; the limit is {settings.max_input_tokens}",
                         "input_too_long", "input")
    # on the inference thread
    vectors = await server.batcher.run(run_embeddings, server.trained, texts, server.dtype)
    data = []
    for i, vector in enumerate(vectors):
        value = (base64.b64encode(vector.numpy().astype(np.float32).tobytes()).decode()
                 if req.encoding_format == "base64" else vector.tolist())
        data.append({"object": "embedding", "index": i, "embedding": value})
    used = sum(min(n, server.trained.meta["max_length"]) for n in lengths)
    return {"object": "list", "data": data, "model": server.name,
            "usage": {"prompt_tokens": used, "total_tokens": used}}

