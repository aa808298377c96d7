"""The causal-LM task's HTTP routes, in the OpenAI API's shape (so that the `openai` client works unchanged):
POST /v1/chat/completions (the run's own chat template), POST /v1/completions (raw text), GET /v1/models;
streaming as server-sent events ending in `data: [DONE]`. Decoding: serve/routes/generation.py's continuous batching."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ...data.chat import prompt_ids
from ...errors import DataError
from ...settings import Strict
from .. import openai_errors
from ..core import Server, ServerDep, current_server, require_key
from ..feedback import EMPTY_CHAT_FEEDBACK
from .adapters import load_adapters
from .generation import (
    DONE,
    MAX_STOP_CHARS,
    MAX_STOPS,
    MIN_TEMPERATURE,
    SEED_RANGE,
    DecodeLoop,
    GenerationMetrics,
    Sequence,
)

access_log = logging.getLogger("tunecraft.access")


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    """`developer` (OpenAI's newer name for the system message) is read as `system`."""
    content: str | list[dict]
    """Text, or an array of content parts of which only `{"type": "text", "text": ...}` is served (joined with
    newlines); any other part is refused (400)."""


class StreamOptions(Strict):
    include_usage: bool = False


class Sampling(Strict):
    """The generation settings a request may set; unset ones are the run's own (tunecraft.json "generation")."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # OpenAI fields this server does not honour: accepted only at their no-op value, else refused (400) naming
    # the field (NOT_HONOURED), never silently ignored
    logprobs: bool | int | None = None
    top_logprobs: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict | None = None
    response_format: dict | None = None
    tools: list | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None
    functions: list | None = None
    function_call: str | dict | None = None


NOT_HONOURED = {"logprobs": (False,), "top_logprobs": (0,), "frequency_penalty": (0,), "presence_penalty": (0,),
                "logit_bias": ({},), "response_format": ({"type": "text"},), "tools": ([],), "tool_choice": ("none",),
                "parallel_tool_calls": (), "functions": ([],), "function_call": ("none",), "best_of": (1,),
                "echo": (False,), "suffix": ("",)}
"""Each field's values, beside leaving it out (None), that change nothing."""


def refuse_not_honoured(req: Sampling) -> None:
    """Refused (400 in OpenAI's shape, param = the field) for a field set to a value this server would ignore."""
    for field, harmless in NOT_HONOURED.items():
        value = getattr(req, field, None)  # best_of, echo, suffix: completions only
        if value is not None and not any(value == ok and isinstance(value, bool) == isinstance(ok, bool)
                                         for ok in harmless):
            raise Refused(error(400, f"{field}={json.dumps(value)[:80]} is not supported by this server; leave "
                                     f"{field} out", "unsupported_parameter", field))


def chat_messages(messages: list[Message]) -> list[dict]:
    """The messages as the chat template takes them: `developer` as `system`, text parts joined with newlines;
    Refused (400, naming the part) for a part that is not text."""
    out = []
    for i, m in enumerate(messages):
        content = m.content
        if isinstance(content, list):
            for j, part in enumerate(content):
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise Refused(error(400, f"messages[{i}].content[{j}] is a content part of type "
                                             f"{json.dumps(part.get('type'))}; this server serves text parts "
                                             '({"type": "text", "text": ...}) only', "unsupported_content_part",
                                        f"messages[{i}].content[{j}].type"))
            content = "\n".join(part["text"] for part in content)
        out.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    return out


class ChatRequest(Sampling):
    model_config = ConfigDict(json_schema_extra={"example": {
        "model": "RUN", "messages": [{"role": "user", "content": "What is AI?"}], "max_tokens": 32}})
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(Sampling):
    model_config = ConfigDict(json_schema_extra={"example": {
        "model": "RUN", "prompt": "Once upon a time", "max_tokens": 32}})
    prompt: str | list[str]
    best_of: int | None = None
    """Not honoured, like echo and suffix (NOT_HONOURED)."""
    echo: bool | None = None
    suffix: str | None = None


class ChatFeedback(Strict):
    """A rating of a generated answer, an edited (better) answer, or both; stored for the next training run."""

    model_config = ConfigDict(json_schema_extra={"example": {
        "model": "RUN", "messages": [{"role": "user", "content": "What is AI?"}], "response": "...", "rating": -1,
        "correction": "Artificial intelligence: ..."}})
    model: str
    messages: list[Message] = Field(min_length=1)
    response: str | None = None
    """The answer the model gave."""
    rating: int | None = Field(None, ge=-1, le=5)
    """-1/1 (thumbs down/up) or 1..5."""
    correction: str | None = Field(None, min_length=1)
    """The answer as it should have been."""


class FeedbackStored(BaseModel):
    id: int
    stored: bool = True


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "tunecraft"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


def error(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    """An error in the OpenAI API's shape (the client raises it as the matching APIStatusError)."""
    return JSONResponse(openai_errors.body(status, message, code, param), status_code=status)


class Refused(Exception):
    def __init__(self, response: JSONResponse):
        self.response = response


def refuse_sampling(req: Sampling, prompts: list[list[int]], stops: list[str], temperature: float, chat: bool,
                    max_sequences: int) -> None:
    """Refused (422, naming the field) for what would fail in the decode loop or hold it up: an empty prompt,
    a positive temperature below MIN_TEMPERATURE, more than MAX_STOPS stop strings or one longer than
    MAX_STOP_CHARS, more than --max-sequences sequences (prompts x n)."""
    for i, ids in enumerate(prompts):
        if not ids:
            raise Refused(error(422, f"the prompt{f' [{i}]' if len(prompts) > 1 else ''} is empty (no tokens)",
                                "empty_prompt", "messages" if chat else "prompt"))
    if 0 < temperature < MIN_TEMPERATURE:
        raise Refused(error(422, f"temperature is {temperature}; give 0 (greedy) or {MIN_TEMPERATURE} to 2",
                            "bad_temperature", "temperature"))
    if len(stops) > MAX_STOPS:
        raise Refused(error(422, f"{len(stops)} stop strings; the limit is {MAX_STOPS}", "too_many_stops", "stop"))
    for i, stop in enumerate(stops):
        if len(stop) > MAX_STOP_CHARS:
            raise Refused(error(422, f"stop [{i}] has {len(stop)} characters; the limit is {MAX_STOP_CHARS}",
                                "stop_too_long", "stop"))
    if len(prompts) * req.n > max_sequences:
        raise Refused(error(422, f"{len(prompts)} prompts x n={req.n} = {len(prompts) * req.n} sequences; "
                                 f"the limit is {max_sequences} (--max-sequences)", "too_many_sequences", "n"))


def max_tokens_of(req: Sampling, gen: dict, limit: int) -> int:
    """The request's max_tokens (or its alias max_completion_tokens, or the run's own); Refused where the two
    differ or it is past the server's limit."""
    alias = getattr(req, "max_completion_tokens", None)
    if alias is not None and req.max_tokens is not None and alias != req.max_tokens:
        raise Refused(error(400, f"max_tokens ({req.max_tokens}) and max_completion_tokens ({alias}) differ; "
                                 "give one of them", "conflicting_parameters", "max_completion_tokens"))
    max_tokens = alias or req.max_tokens or gen["max_new_tokens"]
    if max_tokens > limit:
        raise Refused(error(422, f"max_tokens is {max_tokens}; the limit is {limit}", "max_tokens_too_large",
                            "max_tokens"))
    return max_tokens


class Generation:
    """What the OpenAI routes keep across requests (`server.facets["openai"]`): the served runs by name (the
    run, and with --lora every adapter run beside it) and their metas, the continuous-batching decode loop
    (serve/routes/generation.py) and the time the model list reports as created."""

    def __init__(self, server: Server):
        self.server, self.settings = server, server.settings
        self.created = int(time.time())
        self.runs = {server.name: self.settings.run, **self.settings.lora}
        self.metas: dict[str, dict] = {}
        metrics = GenerationMetrics(server.metrics.registry, lambda: len(self.engine.waiting))
        self.engine = self.decode_loop(metrics, server.metrics.on_batch)

    def load(self, run):
        """With --lora: the base once, every run's adapter beside it; else the run's own model."""
        trained, found = load_adapters(self.runs)
        self.metas.update(found)
        return trained

    def decode_loop(self, metrics=None, on_admit=None) -> DecodeLoop:
        s, server = self.settings, self.server
        return DecodeLoop(lambda: server.trained, lambda fn: server.batcher.run(fn),
                          s.max_batch_size if s.batching else 1, server.dtype, metrics,
                          mixed_adapters=bool(s.lora), on_admit=on_admit)

    def warm_up(self) -> None:  # on the inference thread, uncounted
        loop = asyncio.new_event_loop()
        try:
            tokenizer = self.server.trained.tokenizer
            warm = self.decode_loop()
            warm.waiting.append(Sequence(tokenizer("warm-up", add_special_tokens=False)["input_ids"], 2, 0.0, 1.0,
                                         [], False, asyncio.Queue(), loop,
                                         adapter=next(iter(self.runs)) if self.settings.lora else None))
            warm.run()
        finally:
            loop.close()

    def meta(self, name: str) -> dict:
        return self.metas.get(name) or self.server.trained.meta

    def unknown_model(self, model: str) -> JSONResponse | None:
        if model in self.runs:
            return None
        return error(404, f"the model '{model}' does not exist; this server serves: {', '.join(self.runs)}",
                     "model_not_found", "model")

    def sequences(self, req: Sampling, prompts: list[list[int]], strip: bool, loop) -> list[Sequence]:
        """The request's sequences (n per prompt), or Refused with the OpenAI-shaped error."""
        unknown = self.unknown_model(req.model)
        if unknown is not None:
            raise Refused(unknown)
        refuse_not_honoured(req)
        s, gen = self.settings, self.meta(req.model)["generation"]
        max_tokens = max_tokens_of(req, gen, s.max_new_tokens)
        for i, ids in enumerate(prompts):
            if len(ids) > s.max_input_tokens:
                raise Refused(error(422, f"the prompt{f' [{i}]' if len(prompts) > 1 else ''} has {len(ids)} tokens; "
                                         f"the limit is {s.max_input_tokens}", "prompt_too_long",
                                    "messages" if strip else "prompt"))
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        temperature = gen["temperature"] if req.temperature is None else req.temperature
        top_p = gen["top_p"] if req.top_p is None else req.top_p
        refuse_sampling(req, prompts, stops, temperature, strip, s.max_sequences)
        events: asyncio.Queue = asyncio.Queue()
        return [Sequence(ids, max_tokens, temperature, top_p, [*gen["stop"], *stops], strip, events, loop,
                         index=p * req.n + j, seed=req.seed, adapter=req.model if s.lora else None)
                for p, ids in enumerate(prompts) for j in range(req.n)]


def setup(server: Server) -> None:
    generation = Generation(server)
    server.facets["openai"] = generation
    server.openai_paths.append("/v1/")  # every route of a causal-LM server is the OpenAI API's
    # the routes decode through the engine, not the micro-batcher's batches: the server core loads the model,
    # warms it up and owns the inference thread the loop runs on
    server.serve_batches(None, generation.warm_up, generation.load if server.settings.lora else None)


def current_generation(request: Request) -> Generation:
    return current_server(request).facets["openai"]


GenerationDep = Annotated[Generation, Depends(current_generation)]
"""The OpenAI routes' shared state, as a FastAPI dependency."""


class Reply:
    """One request's answer over its queued sequences: all at once (`whole`), or as a stream of server-sent
    events (`stream`); either way the sequences are cancelled when the client goes away, and one access-log
    line says how the generation went."""

    def __init__(self, request: Request, req: Sampling, seqs: list[Sequence], kind: str, timeout_s: float):
        self.request, self.req, self.seqs, self.kind, self.timeout_s = request, req, seqs, kind, timeout_s
        self.rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        self.start = time.perf_counter()
        self.deadline = time.monotonic() + timeout_s
        self.events = seqs[0].events

    def cancel(self) -> None:
        for seq in self.seqs:
            seq.cancelled = True

    def log(self, stream: bool) -> None:
        seqs = self.seqs
        first = [s.first_token - s.queued for s in seqs if s.first_token is not None]
        gaps = [g for s in seqs for g in s.gaps]
        access_log.info(json.dumps({"event": "generation", "route": self.request.url.path, "id": self.rid,
                                    "stream": stream, "n": len(seqs),
                                    "prompt_tokens": sum(len(s.prompt_ids) for s in seqs),
                                    "completion_tokens": sum(s.tokens for s in seqs),
                                    "finish_reasons": sorted({s.finish_reason or "error" for s in seqs}),
                                    "ttft_ms": round(min(first) * 1000, 2) if first else None,
                                    "itl_ms": round(sum(gaps) / len(gaps) * 1000, 2) if gaps else None,
                                    "latency_ms": round((time.perf_counter() - self.start) * 1000, 2)}))

    async def next_event(self, timeout: float | None):
        """The next (index, delta, DONE or the engine's error for that sequence); TimeoutError past the
        deadline."""
        return await asyncio.wait_for(self.events.get(), timeout)

    def failure(self, err: BaseException) -> dict:
        """The engine's error for one of this request's sequences, in the OpenAI API's error shape."""
        access_log.warning(json.dumps({"event": "generation_failed", "id": self.rid, "error": repr(err)[:500]}))
        return {"error": {"message": f"generation failed: {type(err).__name__}: {str(err)[:500]}",
                          "type": "server_error", "param": None, "code": "generation_failed"}}

    def usage(self) -> dict:
        prompt = sum(len(s.prompt_ids) for s in self.seqs[:: self.req.n])
        completion = sum(s.tokens for s in self.seqs)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion).model_dump()

    async def wait_all(self) -> JSONResponse | None:
        """Until every sequence is done; an error response where the client left, time ran out or one failed."""
        remaining = len(self.seqs)
        while remaining:
            if await self.request.is_disconnected():
                self.cancel()
                return error(499, "the client closed the request", "client_closed")
            try:
                _, event = await self.next_event(min(0.5, max(0.0, self.deadline - time.monotonic())))
            except TimeoutError:
                if time.monotonic() < self.deadline:
                    continue
                self.cancel()
                return error(504, f"generation took longer than {self.timeout_s} s", "timeout")
            if isinstance(event, BaseException):
                self.cancel()
                return JSONResponse(self.failure(event), status_code=500)
            remaining -= event is DONE
        return None

    async def whole(self) -> JSONResponse:
        try:
            failed = await self.wait_all()
        finally:
            self.log(False)
        if failed is not None:
            return failed
        if self.kind == "chat":
            choices = [{"index": s.index, "message": {"role": "assistant", "content": s.answer}, "logprobs": None,
                        "finish_reason": s.finish_reason} for s in self.seqs]
        else:
            choices = [{"index": s.index, "text": s.answer, "logprobs": None, "finish_reason": s.finish_reason}
                       for s in self.seqs]
        obj = "chat.completion" if self.kind == "chat" else "text_completion"
        return JSONResponse({"id": self.rid, "object": obj, "created": int(time.time()), "model": self.req.model,
                             "choices": choices, "usage": self.usage()})

    def choice(self, seq: Sequence, text: str | None, finish: str | None, first: bool = False) -> dict:
        if self.kind == "chat":
            delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
            return {"index": seq.index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": seq.index, "text": text or "", "logprobs": None, "finish_reason": finish}

    def sse(self, choices: list[dict], **extra) -> str:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        body = {"id": self.rid, "object": obj, "created": int(time.time()), "model": self.req.model,
                "choices": choices, **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def stream(self):
        try:
            if self.kind == "chat":
                yield self.sse([self.choice(s, None, None, first=True) for s in self.seqs])
            async for chunk in self.chunks():
                yield chunk
            yield "data: [DONE]\n\n"
        finally:  # a client that went away (or a finished stream): nothing more is decoded for it
            self.cancel()
            self.log(True)

    async def chunks(self):
        """The stream's events up to its end: deltas, finishes, then the usage where asked; a timeout or a failed
        sequence ends it with the error (the other requests go on)."""
        remaining = len(self.seqs)
        while remaining:
            try:
                index, event = await self.next_event(max(0.0, self.deadline - time.monotonic()))
            except TimeoutError:
                self.cancel()
                timeout = {"error": {"message": f"generation took longer than {self.timeout_s} s",
                                     "type": "timeout_error", "param": None, "code": "timeout"}}
                yield f"data: {json.dumps(timeout)}\n\n"
                return
            seq = self.seqs[index]
            if isinstance(event, BaseException):
                yield f"data: {json.dumps(self.failure(event), ensure_ascii=False)}\n\n"
                return
            if event is DONE:
                remaining -= 1
                yield self.sse([self.choice(seq, None, seq.finish_reason)])
            else:
                yield self.sse([self.choice(seq, event, None)])
        if self.req.stream_options is not None and self.req.stream_options.include_usage:
            yield self.sse([], usage=self.usage())


async def answer(request: Request, req: Sampling, seqs: list[Sequence], kind: str, generation: Generation):
    """Queue the sequences; answer all at once, or as a stream of server-sent events."""
    generation.engine.submit(seqs)
    reply = Reply(request, req, seqs, kind, generation.settings.generation_timeout_s)
    if not req.stream:
        return await reply.whole()
    return StreamingResponse(reply.stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


router = APIRouter(dependencies=[Depends(require_key)])


@router.post("/v1/feedback", response_model=FeedbackStored, responses={401: {}, 404: {}, 422: {}})
async def feedback(req: ChatFeedback, server: ServerDep, generation: GenerationDep):
    unknown = generation.unknown_model(req.model)
    if unknown is not None:
        return unknown
    if req.rating is None and req.correction is None:
        return error(422, EMPTY_CHAT_FEEDBACK, "empty_feedback", "rating")
    row = server.feedback.add_chat(json.dumps([m.model_dump() for m in req.messages], ensure_ascii=False),
                                   req.response, req.rating, req.correction, req.model)
    server.metrics.feedback.inc()
    return FeedbackStored(id=row)


@router.get("/v1/models", response_model=ModelList)
async def models(generation: GenerationDep):
    return ModelList(data=[ModelCard(id=name, created=generation.created) for name in generation.runs])


@router.post("/v1/chat/completions", responses={401: {}, 404: {}, 413: {}, 422: {}})
async def chat_completions(req: ChatRequest, request: Request, server: ServerDep, generation: GenerationDep):
    tokenizer = server.trained.tokenizer
    try:  # user text is tokenized as text: a typed <|im_end|> cannot forge a turn (data/chat.tokenize_chat)
        ids = prompt_ids(tokenizer, chat_messages(req.messages))
        seqs = generation.sequences(req, [ids], True, asyncio.get_running_loop())
    except DataError as err:
        return error(422, str(err), "bad_messages", "messages")
    except Refused as refused:
        return refused.response
    return await answer(request, req, seqs, "chat", generation)


@router.post("/v1/completions", responses={401: {}, 404: {}, 413: {}, 422: {}})
async def completions(req: CompletionRequest, request: Request, server: ServerDep, generation: GenerationDep):
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    limit = server.settings.max_texts
    if not prompts or len(prompts) > limit:
        return error(422, f"{len(prompts)} prompts; give 1 to {limit}", "bad_prompt", "prompt")
    tokenizer = server.trained.tokenizer
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    try:
        seqs = generation.sequences(req, ids, False, asyncio.get_running_loop())
    except Refused as refused:
        return refused.response
    return await answer(request, req, seqs, "completion", generation)
