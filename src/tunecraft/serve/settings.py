"""How `tunecraft serve` runs: the server's settings (light: the command line reads them without torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..settings import Strict


class ServeSettings(Strict):
    """The settings of one server; `tunecraft serve`'s options are generated from these fields."""

    run: str
    """The run folder (or compressed variant folder) to serve."""
    host: str = "127.0.0.1"
    """The address to bind (0.0.0.0: every interface)."""
    allowed_hosts: list[str] = []
    """Host names the server answers to beside --host and localhost, 127.0.0.1, [::1] (bound to 0.0.0.0 or ::,
    any IP address too); other Hosts are refused (400: DNS rebinding). Repeated; `*` allows every Host."""
    port: int = Field(8000, ge=0, le=65535)
    """The port to listen on."""
    workers: int = Field(1, ge=1)
    """Server processes (uvicorn workers), each with its own copy of the model and an equal share of the cores."""
    batching: bool = True
    """Put the items of concurrent requests through the model together (off: one forward pass per request
    item; generative runs: one sequence decoding at a time)."""
    max_batch_size: int = Field(32, ge=1)
    """Items per forward pass at most (generative runs: sequences in the running batch)."""
    max_wait_ms: float = Field(0.0, ge=0)
    """Extra wait for a fuller batch; 0 batches only what queued up while the last batch ran."""
    max_body_bytes: int = Field(1_000_000, ge=1)
    """Larger request bodies are refused (413)."""
    max_texts: int = Field(64, ge=1)
    """Texts per request at most (more: 413)."""
    max_sequences: int = Field(64, ge=1)
    """Generative runs: sequences one request may ask for at most (prompts x n; more is refused, 422), so that one
    request cannot fill the queue; the decode loop also admits the sequences of queued requests in turn."""
    max_input_tokens: int = Field(512, ge=1)
    """Generative prompts and /v1/embeddings inputs longer than this many tokens are refused (422);
    classification and NER texts are never refused for length (cut to max_length, as `tunecraft predict` does)."""
    max_new_tokens: int = Field(1024, ge=1)
    """Generative runs: the largest max_tokens a request may ask for (more is refused, 422)."""
    generation_timeout_s: float = Field(300, gt=0)
    """Generative runs: a request still generating after this long is cancelled (504)."""
    lora: dict[str, str] = {}
    """Generative LoRA runs served beside RUN on one base model in memory, by name (the request's `model`);
    on the command line `--lora NAME=RUN`, repeated."""
    body_timeout: float = Field(10.0, gt=0)
    """Seconds a request's body may take to arrive after its headers; then 408 and the connection closes."""
    keep_alive: float = Field(5.0, gt=0)
    """Seconds an idle keep-alive connection stays open between requests."""
    max_connections: int = Field(128, ge=1)
    """Open connections per worker; a request that arrives over it is answered 503."""
    api_key: str | None = None
    """Require this key (X-API-Key or Authorization: Bearer); the command line's default is
    $TUNECRAFT_API_KEY, else no key."""
    feedback_db: str | None = None
    """SQLite file for /v1/feedback (default: <run>/feedback.sqlite)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: fp32 for generative runs (answers as the run at any concurrency; bf16 is a faster opt-in whose greedy
    answers can change with the batch), else bf16 where the hardware has it, else fp32."""
    drain_seconds: float = Field(30, ge=0)
    """Graceful shutdown: how long requests in flight may take to finish."""
