"""The generation engine behind the OpenAI routes: requests queued through the server's micro-batcher are decoded
together (left padding, one `model.generate` with the KV cache per group of equal sampling settings), and each
sequence's text streams out token by token as it is decoded, cut at EOS and stop strings as `tunecraft predict`
cuts it. A sequence whose client went away stops at the next step.

Batching is of whole requests: what queued while a batch decoded forms the next batch. transformers' continuous
batching (`generate_batch`) runs on CPU and gives the same greedy tokens, but took 128 s for two 8-token requests on
the tiny test decoder here (docs/serving.md)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import torch
from prometheus_client import Counter, Gauge, Histogram
from transformers import StoppingCriteria, StoppingCriteriaList

from ..data.chat import cut_at_stops
from ..evaluate.inference import autocast_context

DONE = None
"""The event that ends a sequence's stream (after its last text delta)."""


@dataclass(eq=False)
class Sequence:
    """One sequence to generate (a request with n=3 is three), and what has come of it so far."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    stops: list[str]
    strip: bool
    """Strip the answer's surrounding whitespace, as `tunecraft predict` does for chat answers."""
    events: asyncio.Queue
    """(index, text delta) as text is decoded, then (index, DONE); shared by a request's sequences."""
    loop: asyncio.AbstractEventLoop
    index: int = 0
    group: object = None
    """Sequences of one request that sets a seed decode alone, so that the seed reproduces the answer."""
    seed: int | None = None
    adapter: str | None = None
    """The named LoRA adapter that answers (serve/adapters.py), or None for the run's own model."""
    cancelled: bool = False
    queued: float = field(default_factory=time.perf_counter)
    text: str = ""
    sent: str = ""
    answer: str = ""
    """The whole answer, once finished."""
    tokens: int = 0
    finish_reason: str | None = None
    first_token: float | None = None
    last_token: float | None = None
    gaps: list[float] = field(default_factory=list)

    @property
    def key(self) -> tuple:
        """Sequences with the same key can share one generate call."""
        if self.temperature == 0:
            return (self.adapter, 0.0, 1.0, None)
        return (self.adapter, self.temperature, self.top_p, self.group if self.seed is not None else None)

    def emit(self, event) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (self.index, event))

    def visible(self, final: bool) -> str:
        """The answer as it may be shown now: cut at a stop string; while decoding, without a tail that may still
        become a stop string, trailing whitespace (when stripping) or a half-decoded character."""
        text = cut_at_stops(self.text, self.stops)
        if final:
            return text.strip() if self.strip else text
        held = max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        text = text[: len(text) - held].rstrip("\ufffd")
        return text.strip() if self.strip else text

    def advance(self, final: bool = False) -> None:
        shown = self.visible(final)
        if shown.startswith(self.sent) and len(shown) > len(self.sent):
            self.emit(shown[len(self.sent):])
            self.sent = shown

    def finish(self, reason: str) -> None:
        self.finish_reason = reason
        self.answer = self.visible(final=True)
        self.advance(final=True)
        self.emit(DONE)


class GenerationMetrics:
    """Prometheus metrics of generation, registered beside the core's (serve/app.py `Metrics`)."""

    def __init__(self, registry, queue_depth):
        self.prompt_tokens = Counter("tunecraft_prompt_tokens", "Prompt tokens of generation requests",
                                     registry=registry)
        self.completion_tokens = Counter("tunecraft_completion_tokens", "Generated tokens", registry=registry)
        self.sequences = Counter("tunecraft_sequences", "Generated sequences by finish reason", ["finish_reason"],
                                 registry=registry)
        self.ttft = Histogram("tunecraft_time_to_first_token_seconds", "From queueing to the first generated token",
                              buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30), registry=registry)
        self.itl = Histogram("tunecraft_inter_token_latency_seconds", "Between two generated tokens of a sequence",
                             buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1), registry=registry)
        self.running = Gauge("tunecraft_running_sequences", "Sequences in the batch decoding now", registry=registry)
        self.queue = Gauge("tunecraft_queue_depth", "Sequences waiting for the next batch", registry=registry)
        self.queue.set_function(queue_depth)

    def record(self, seq: Sequence) -> None:
        self.prompt_tokens.inc(len(seq.prompt_ids))
        self.completion_tokens.inc(seq.tokens)
        self.sequences.labels(seq.finish_reason).inc()
        if seq.first_token is not None:
            self.ttft.observe(seq.first_token - seq.queued)
        for gap in seq.gaps:
            self.itl.observe(gap)


class Watch(StoppingCriteria):
    """Called by generate after each decoding step: records each row's new token, streams its text, and says
    which rows are done (EOS, a stop string, max_tokens, or a client that went away)."""

    def __init__(self, rows: list[Sequence], prompt_len: int, tokenizer, eos: set[int]):
        self.rows, self.prompt_len, self.tokenizer, self.eos = rows, prompt_len, tokenizer, eos

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        now = time.perf_counter()
        done = []
        for row, seq in zip(input_ids, self.rows):
            if seq.finish_reason is not None:
                done.append(True)
                continue
            new = row[self.prompt_len:].tolist()
            seq.tokens = len(new)
            if seq.first_token is None:
                seq.first_token = now
            else:
                seq.gaps.append(now - seq.last_token)
            seq.last_token = now
            if new[-1] in self.eos:
                seq.finish("stop")
            else:
                seq.text = self.tokenizer.decode(new, skip_special_tokens=True)
                if any(s and s in seq.text for s in seq.stops):
                    seq.finish("stop")
                elif seq.tokens >= seq.max_tokens:
                    seq.finish("length")
                elif seq.cancelled:
                    seq.finish("cancelled")
                else:
                    seq.advance()
            done.append(seq.finish_reason is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def generate_batch(model, tokenizer, sequences: list[Sequence], dtype=None, metrics: GenerationMetrics | None = None,
                   ) -> list[Sequence]:
    """Decode `sequences` (on the inference thread), in groups of equal sampling settings; each ends with its
    finish_reason set and its DONE event sent."""
    for seq in sequences:
        if seq.cancelled:
            seq.finish("cancelled")
    groups: dict[tuple, list[Sequence]] = {}
    for seq in sequences:
        if seq.finish_reason is None:
            groups.setdefault(seq.key, []).append(seq)
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    for (adapter, temperature, top_p, _), rows in groups.items():
        if adapter is not None:
            model.set_adapter(adapter)
        width = max(len(s.prompt_ids) for s in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        ids = torch.tensor([[pad] * (width - len(s.prompt_ids)) + s.prompt_ids for s in rows], device=device)
        mask = torch.tensor([[0] * (width - len(s.prompt_ids)) + [1] * len(s.prompt_ids) for s in rows],
                            device=device)
        # the same settings as tasks/causal_lm.py generate(), so that greedy answers equal `tunecraft predict`'s
        kwargs = {"max_new_tokens": max(s.max_tokens for s in rows), "pad_token_id": tokenizer.pad_token_id,
                  "eos_token_id": eos, "do_sample": temperature > 0}
        kwargs.update({"temperature": temperature, "top_p": top_p} if temperature > 0 else
                      {"temperature": None, "top_p": None, "top_k": None})
        if temperature > 0 and rows[0].seed is not None:  # + the first index: n=3 split over batches still differ
            torch.manual_seed(rows[0].seed + rows[0].index)
        if metrics is not None:
            metrics.running.set(len(rows))
        watch = Watch(rows, width, tokenizer, {eos} if isinstance(eos, int) else set(eos))
        try:
            with autocast_context(device, dtype):
                model.generate(input_ids=ids, attention_mask=mask, stopping_criteria=StoppingCriteriaList([watch]),
                               **kwargs)
        finally:
            if metrics is not None:
                metrics.running.set(0)
        for seq in rows:
            if seq.finish_reason is None:  # generate stopped at max_new_tokens before Watch saw the row end
                seq.finish("length")
    if metrics is not None:
        for seq in sequences:
            metrics.record(seq)
    return sequences
