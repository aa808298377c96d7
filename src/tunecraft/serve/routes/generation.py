"""The generation engine behind the OpenAI routes: continuous batching. One decode loop on the server's inference
thread owns a running batch and its KV cache; before each decoding step it admits the sequences queued meanwhile
(prefilled together, their cache joined to the running one with left padding), then runs one forward for every
running row, picks each row's next token by the row's own settings (greedy, or temperature/top_p with the row's
own seeded generator), streams each row's text, and drops the rows that finished (EOS, a stop string, max_tokens,
or a client that went away) together with the cache columns that are padding in every row left. The keys and
values of a prompt head that prompts share (a chat template's system prompt) are kept and copied in, so admitting a
prompt prefills only the rest of it.

Written by hand because transformers 5.24's own continuous batching (`generate_batch`, `ContinuousBatchingManager`)
does not serve here: it runs on a thread of its own, takes one generation config for all requests (no per-request
temperature, top_p or seed) and no peft adapter per request, and two 8-token requests on the tiny test decoder took
23 s with it vs 0.06 s with two `model.generate` calls (2026-11-28, a quiet CPU; docs/serving.md). peft's mixed-batch
LoRA (`adapter_names=` on the forward) lets rows of different adapters share one forward."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch
from prometheus_client import Counter, Gauge, Histogram
from transformers import DynamicCache, TemperatureLogitsWarper, TopPLogitsWarper
from transformers.cache_utils import DynamicLayer

from ...data.chat import cut_at_stops
from ...errors import TunecraftError
from ...runtime.inference import autocast_context

DONE = None
"""The event that ends a sequence's stream (after its last text delta); an exception instead says the engine
failed that sequence (only it: the loop decodes the others on)."""
MAX_STOPS = 4
"""Stop strings a request may give (as OpenAI's API)."""
MAX_STOP_CHARS = 64
"""Characters one stop string may have; matching looks only at the text's tail that may hold a new match."""
SEED_RANGE = (-(2**63), 2**63 - 1)
"""The seeds a request may give (a 64-bit signed integer); the generator is seeded with (seed + index) mod 2**64."""
MIN_TEMPERATURE = 1e-2
"""Smaller positive temperatures overflow the scaled logits (1e-300: inf, NaN probabilities); 0 is greedy."""


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
    seed: int | None = None
    """With a seed (and temperature > 0) the sequence samples from its own generator, seeded with seed + index, so
    the seed reproduces the answer whatever it is batched with."""
    adapter: str | None = None
    """The named LoRA adapter that answers (serve/routes/adapters.py), or None for the run's own model."""
    cancelled: bool = False
    queued: float = field(default_factory=time.perf_counter)
    generated: list[int] = field(default_factory=list)
    text: str = ""
    sent: str = ""
    answer: str = ""
    """The whole answer, once finished."""
    finish_reason: str | None = None
    first_token: float | None = None
    last_token: float | None = None
    gaps: list[float] = field(default_factory=list)
    generator: torch.Generator | None = None

    @property
    def tokens(self) -> int:
        return len(self.generated)

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

    def fail(self, err: BaseException) -> None:
        """End this sequence (only) with the engine's error, which its stream reports."""
        self.finish_reason = "error"
        self.emit(err)

    def finish(self, reason: str) -> None:
        self.finish_reason = reason
        self.answer = self.visible(final=True)
        self.advance(final=True)
        self.emit(DONE)

    def _new_stop(self, before: int) -> bool:
        """Whether a stop string ends in the text decoded since it was `before` characters long: only the tail
        from a stop's length (and a few characters a re-decode may change) back is searched, so the whole check is
        linear in the answer's length."""
        longest = max((len(s) for s in self.stops), default=0)
        tail = self.text[max(0, before - longest - 4):]
        return any(s and s in tail for s in self.stops)

    def add(self, token: int, tokenizer, eos: set[int], now: float) -> None:
        """Record the next generated token, stream the new text, finish at EOS, a stop string or max_tokens (as
        `tunecraft predict` cuts its answer)."""
        self.generated.append(token)
        if self.first_token is None:
            self.first_token = now
        else:
            self.gaps.append(now - self.last_token)
        self.last_token = now
        if token in eos:
            self.finish("stop")
            return
        before = len(self.text)
        self.text = tokenizer.decode(self.generated, skip_special_tokens=True)
        if self._new_stop(before):
            self.finish("stop")
        elif self.tokens >= self.max_tokens:
            self.finish("length")
        else:
            self.advance()


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
        self.running = Gauge("tunecraft_running_sequences", "Sequences in the running batch now", registry=registry)
        self.queue = Gauge("tunecraft_queue_depth", "Sequences waiting to join the running batch", registry=registry)
        self.queue.set_function(queue_depth)

    def record(self, seq: Sequence) -> None:
        self.prompt_tokens.inc(len(seq.prompt_ids))
        self.completion_tokens.inc(seq.tokens)
        self.sequences.labels(seq.finish_reason).inc()
        if seq.first_token is not None:
            self.ttft.observe(seq.first_token - seq.queued)
        for gap in seq.gaps:
            self.itl.observe(gap)


MIN_PREFIX = 16
"""Prompt tokens two prompts in a row must share before their K/V are cached for the prompts after."""


@dataclass
class Prefix:
    """Prompt tokens many prompts begin with, and their keys and values (batch of one) at each layer."""

    tokens: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]


class DecodeLoop:
    """The running batch: `submit` (on the event loop) queues sequences; `run` (on the inference thread) decodes
    until nothing runs or waits. `model` and `tokenizer` are read when the loop runs (the server loads them late).

    `max_running` caps the rows decoding together (1: one sequence at a time); `mixed_adapters`: the model is a
    peft model whose rows name their adapter (`adapter_names=`); `on_admit(rows, seconds)` is told of each prefill."""

    def __init__(self, trained, run_on_inference_thread, max_running: int, dtype=None,
                 metrics: GenerationMetrics | None = None, mixed_adapters: bool = False, on_admit=None):
        self.trained, self.run_elsewhere = trained, run_on_inference_thread
        self.max_running, self.dtype, self.metrics = max_running, dtype, metrics
        self.mixed_adapters, self.on_admit = mixed_adapters, on_admit
        self.waiting: deque[Sequence] = deque()
        self.lock = threading.Lock()
        self.active = False
        self.task: asyncio.Future | None = None
        self.prefixes: dict[str | None, Prefix] = {}
        self.last_prompts: dict[str | None, list[int]] = {}
        self._reset()

    def _reset(self) -> None:
        self.rows: list[Sequence] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None
        self.last: torch.Tensor | None = None
        """Each row's newest token, not yet fed to the model."""
        self.admitting: list[Sequence] = []
        """Sequences taken from the queue, not yet in the running batch."""

    # -- the event loop's side ----------------------------------------------------------------------------------

    def submit(self, seqs: list[Sequence]) -> None:
        """Queue `seqs`; their text, DONE (or the engine's error) arrive on their events queue."""
        with self.lock:
            self.waiting.extend(seqs)
            start, self.active = not self.active, True
        if start:
            self.task = asyncio.ensure_future(self.run_elsewhere(self.run))

    # -- the inference thread's side ----------------------------------------------------------------------------

    @torch.no_grad()
    def run(self) -> None:
        """Decode until no sequence runs or waits."""
        while True:
            with self.lock:
                if not self.waiting and not self.rows:
                    self.active = False
                    return
            try:
                self.admit()
                if self.rows:
                    self.step()
            except Exception as err:  # the forward of the running batch failed: its rows learn of it, the
                failed = [s for s in self.rows + self.admitting if s.finish_reason is None]  # queue is served on
                self._reset()
                for seq in failed:
                    seq.fail(err)
                    self._finished(seq)
            finally:
                if self.metrics is not None:
                    self.metrics.running.set(len(self.rows))

    def _finished(self, seq: Sequence) -> None:
        if self.metrics is not None:
            self.metrics.record(seq)

    def _forward(self, ids, mask, positions, cache: DynamicCache, adapters: list[str | None]):
        """The logits of each row's last position (the cache grows in place)."""
        model = self.trained().model
        kwargs = {"adapter_names": adapters} if self.mixed_adapters else {}
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        if "logits_to_keep" in inspect.signature(inner.forward).parameters:  # as generate: no prompt-wide logits
            kwargs["logits_to_keep"] = 1
        with autocast_context(ids.device, self.dtype):
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                        cache=cache, use_cache=True, **kwargs)
        return out.logits[:, -1].float()

    def _pick(self, logits: torch.Tensor, rows: list[Sequence]) -> list[int | None]:
        """Each row's next token: argmax when greedy (as generate's greedy search), else a draw after temperature
        and top-p (generate's warpers, in its order) from the row's generator. A row whose draw fails is failed
        (None) and the others go on."""
        picked: list[int | None] = logits.argmax(-1).tolist()
        for i, seq in enumerate(rows):
            if seq.temperature > 0:
                try:
                    picked[i] = self._draw(logits[i: i + 1], seq)
                except Exception as err:
                    picked[i] = None
                    seq.fail(err)
                    self._finished(seq)
        return picked

    @staticmethod
    def _draw(logits: torch.Tensor, seq: Sequence) -> int:
        scores = TemperatureLogitsWarper(seq.temperature)(None, logits)
        if seq.top_p < 1:
            scores = TopPLogitsWarper(seq.top_p)(None, scores)
        return int(torch.multinomial(scores.softmax(-1), 1, generator=seq.generator)[0, 0])

    def _record(self, rows: list[Sequence], tokens: list[int]) -> None:
        tokenizer = self.trained().tokenizer
        eos = tokenizer.eos_token_id
        eos = {eos} if isinstance(eos, int) else set(eos)
        now = time.perf_counter()
        for seq, token in zip(rows, tokens):
            if seq.finish_reason is not None:  # failed in _pick
                continue
            try:
                seq.add(token, tokenizer, eos, now)
            except Exception as err:  # this row's decoding or stop check failed: only it ends
                seq.fail(err)
            if seq.finish_reason is not None:
                self._finished(seq)

    def _take(self, room: int) -> list[Sequence]:
        """Up to `room` waiting sequences, the requests' in turn (each request's first, then each one's second,
        ...; in arrival order within a round), so that a request of many sequences cannot starve later ones.
        Cancelled sequences are finished wherever they wait. Holds the lock."""
        rank: dict[int, int] = {}
        order = []
        for pos, seq in enumerate(self.waiting):
            if seq.cancelled:  # never decoded
                seq.finish("cancelled")
                self._finished(seq)
                continue
            r = rank[id(seq.events)] = rank.get(id(seq.events), -1) + 1
            order.append((r, pos, seq))
        order.sort(key=lambda t: t[:2])
        taken = [seq for _, _, seq in order[:room]]
        chosen = {id(s) for s in taken}
        self.waiting = deque(s for s in self.waiting if not s.cancelled and id(s) not in chosen)
        return taken

    def admit(self) -> None:
        """Prefill the waiting sequences there is room for and join them to the running batch. A group whose
        prefill fails is failed alone; the running batch and the other groups go on."""
        with self.lock:
            new = self._take(self.max_running - len(self.rows)) if self.waiting else []
        if not new:
            return
        self.admitting = new
        start = time.perf_counter()
        device = next(self.trained().model.parameters()).device
        groups: dict[int, tuple[Prefix | None, list[Sequence]]] = {}
        for seq in new:
            try:
                if seq.seed is not None and seq.temperature > 0:
                    seq.generator = torch.Generator(device=device).manual_seed((seq.seed + seq.index) % 2**64)
                prefix = self._prefix(seq, device)
            except Exception as err:
                seq.fail(err)
                self._finished(seq)
                continue
            groups.setdefault(id(prefix), (prefix, []))[1].append(seq)
        for prefix, rows in groups.values():
            self._prefill_isolated(rows, prefix, device)
        self.admitting = []
        if self.on_admit is not None:
            self.on_admit(len(new), time.perf_counter() - start)
        self._drop_finished()

    def _prefill_isolated(self, rows: list[Sequence], prefix: Prefix | None, device) -> None:
        """`_prefill`; when a group's prefill fails, each of its rows is prefilled alone, so that only the row
        that fails (an empty prompt, say) is failed."""
        try:
            self._prefill(rows, prefix, device)
            return
        except Exception as err:
            if len(rows) == 1:
                if rows[0].finish_reason is None:
                    rows[0].fail(err)
                    self._finished(rows[0])
                return
        for seq in rows:
            if seq.finish_reason is None:
                self._prefill_isolated([seq], prefix, device)

    def _prefix(self, seq: Sequence, device) -> Prefix | None:
        """The cached prefix `seq`'s prompt starts with (per adapter: its K/V differ), learnt as the prompt tokens
        two prompts in a row begin with (a chat template's system prompt and turn header), or None."""
        ids = seq.prompt_ids
        if seq.seed is not None and seq.temperature > 0:
            return None  # a seed reproduces its answer on every request: the first request after a start has no
            # cached prefix, and a prefix prefilled apart rounds differently from the whole prompt
        stored = self.prefixes.get(seq.adapter)
        if stored is not None and len(ids) > len(stored.tokens) and ids[: len(stored.tokens)] == stored.tokens:
            return stored
        last, self.last_prompts[seq.adapter] = self.last_prompts.get(seq.adapter), ids
        if last is None:
            return None
        shared = 0
        for x, y in zip(last, ids[:-1]):
            if x != y:
                break
            shared += 1
        if shared < MIN_PREFIX:
            return None
        cache = DynamicCache(config=self.trained().model.config)
        tokens = torch.tensor([ids[:shared]], device=device)
        self._forward(tokens, torch.ones_like(tokens), torch.arange(shared, device=device)[None], cache,
                      [seq.adapter])
        self.prefixes[seq.adapter] = Prefix(ids[:shared], [(layer.keys, layer.values) for layer in cache.layers])
        return self.prefixes[seq.adapter]

    def _prefill(self, rows: list[Sequence], prefix: Prefix | None, device) -> None:
        """One forward over the rows' prompts (after their shared prefix, whose K/V are copied in), left-padded as
        [prefix][padding][rest of the prompt]; each row's first token; the rows joined to the running batch."""
        tokenizer = self.trained().tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        shared = len(prefix.tokens) if prefix is not None else 0
        rests = [s.prompt_ids[shared:] for s in rows]
        width = max(len(r) for r in rests)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rests], device=device)
        mask = torch.tensor([[1] * shared + [0] * (width - len(r)) + [1] * len(r) for r in rests], device=device)
        if prefix is None:
            cache = DynamicCache(config=self.trained().model.config)
        else:
            cache = DynamicCache([(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1))
                                  for k, v in prefix.kv])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        logits = self._forward(ids, mask, positions, cache, [s.adapter for s in rows])
        if any(type(layer) is not DynamicLayer for layer in cache.layers):
            raise TunecraftError("continuous batching joins full-attention caches only; this model's cache has "
                                 f"{sorted({type(layer).__name__ for layer in cache.layers})}")
        tokens = self._pick(logits, rows)
        self._join(rows, cache, mask, torch.tensor([t or 0 for t in tokens], device=device))
        self._record(rows, tokens)

    def _join(self, new: list[Sequence], cache: DynamicCache, mask: torch.Tensor, last: torch.Tensor) -> None:
        """Append the new rows (their cache, mask, newest token) to the running batch, left-padding the shorter
        cache with zeros that the mask hides."""
        if not self.rows:
            self.rows, self.cache, self.mask, self.last = new, cache, mask, last
            return
        width = max(self.mask.shape[1], mask.shape[1])

        def left_pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            missing = width - t.shape[dim]
            if not missing:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for old, add in zip(self.cache.layers, cache.layers):
            old.keys = torch.cat([left_pad(old.keys, 2), left_pad(add.keys, 2)])
            old.values = torch.cat([left_pad(old.values, 2), left_pad(add.values, 2)])
        self.mask = torch.cat([left_pad(self.mask, 1), left_pad(mask, 1)])
        self.last = torch.cat([self.last, last])
        self.rows = self.rows + new

    def _drop_finished(self) -> None:
        """Remove finished and cancelled rows, and the cache columns that are padding in every row left."""
        for seq in self.rows:
            if seq.finish_reason is None and seq.cancelled:
                seq.finish("cancelled")
                self._finished(seq)
        keep = [i for i, seq in enumerate(self.rows) if seq.finish_reason is None]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self._reset()
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.rows = [self.rows[i] for i in keep]
        self.mask, self.last = self.mask[index], self.last[index]
        first = int(self.mask.any(0).nonzero()[0, 0])
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, first:], layer.values[index, :, first:]

    def step(self) -> None:
        """One decoding forward for every running row: feed each its newest token, pick the next."""
        self._drop_finished()  # a client that went away meanwhile
        if not self.rows:
            return
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        positions = self.mask.sum(-1, keepdim=True) - 1
        logits = self._forward(self.last[:, None], self.mask, positions, self.cache, [s.adapter for s in self.rows])
        tokens = self._pick(logits, self.rows)
        self.last = torch.tensor([t or 0 for t in tokens], device=self.mask.device)  # a failed row's is dropped
        self._record(self.rows, tokens)
        self._drop_finished()
