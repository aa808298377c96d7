"""Generation under load: a served causal-LM run with batching vs the same server one request at a time
(--no-batching) vs a plain `model.generate` loop, at several concurrencies: output tokens/s, p50/p99 time to first
token, errors.

    python benchmarks/generate_load.py RUN [--concurrency 1 8 32] [--requests 32] [--max-tokens 16]
    python benchmarks/generate_load.py RUN --fan-out [--requests 16]

--fan-out instead measures a small request's latency (8 tokens) alone vs while a large /v1/completions request
(4 prompts x n=16 = 64 sequences, 48 tokens each) is decoding: p50/p99 (the decode loop admits requests in turn).

Without RUN, a tiny causal-LM run (tests/tiny_decoder.py) is built in a temporary folder first."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tunecraft.cpus import wait_briefly

wait_briefly()  # before torch: the plain loop's OpenMP threads wait as the server's do (cpus.py)
import torch  # noqa: E402
from server_process import percentile, start_server, stop_server  # noqa: E402

PROMPTS = ["What is AI?", "Tell me a joke.", "My internet is not working.", "hello", "Who are you?",
           "What is your favourite colour?"]


async def streamed_chat(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int,
                        **settings) -> tuple[str, float, int]:
    """(answer, time to first token, completion tokens) of one streamed chat completion."""
    start, first, tokens, parts = time.perf_counter(), None, 0, []
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}, **settings}
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            piece = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
            if piece:
                first = first if first is not None else time.perf_counter() - start
                parts.append(piece)
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return "".join(parts).strip(), first if first is not None else time.perf_counter() - start, tokens


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int):
    """(time to first token, completion tokens) of one streamed chat completion."""
    _, first, tokens = await streamed_chat(client, url, model, prompt, max_tokens)
    return first, tokens


async def load(url: str, model: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600) as client:
        async def guarded(i):
            async with limit:
                return await one_request(client, url, model, PROMPTS[i % len(PROMPTS)], max_tokens)

        start = time.perf_counter()
        results = await asyncio.gather(*[guarded(i) for i in range(requests)], return_exceptions=True)
        wall = time.perf_counter() - start
    ok = [r for r in results if not isinstance(r, BaseException)]
    return summary([t for t, _ in ok], sum(n for _, n in ok), wall, len(results) - len(ok))


def summary(ttft: list[float], tokens: int, wall: float, errors: int) -> dict:
    return {"tokens_per_s": round(tokens / wall, 1), "ttft_p50_ms": round(percentile(ttft, 0.5) * 1000, 1),
            "ttft_p99_ms": round(percentile(ttft, 0.99) * 1000, 1), "errors": errors, "tokens": tokens,
            "wall_s": round(wall, 2)}


def plain_loop(run: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    """A plain transformers loop: the requests of each wave of `concurrency` arrive together and are answered one
    at a time with model.generate (batch of one, KV cache); TTFT counts the wait for the ones before."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria

    folder = str(Path(run) / "model")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)

    class First(StoppingCriteria):
        def __init__(self):
            self.at = None

        def __call__(self, input_ids, scores, **kwargs):
            self.at = self.at or time.perf_counter()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    ttft, tokens = [], 0
    start = time.perf_counter()
    for wave in range(0, requests, concurrency):
        arrived = time.perf_counter()
        for i in range(wave, min(requests, wave + concurrency)):
            messages = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)
            first = First()
            with torch.no_grad():
                out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, stopping_criteria=[first],
                                     pad_token_id=tokenizer.pad_token_id)
            ttft.append(first.at - arrived)
            tokens += out.shape[1] - ids["input_ids"].shape[1]
    return summary(ttft, tokens, time.perf_counter() - start, 0)


async def small_latency(client: httpx.AsyncClient, url: str, model: str) -> float:
    start = time.perf_counter()
    r = await client.post(url + "/v1/completions", json={"model": model, "prompt": "hello", "max_tokens": 8})
    r.raise_for_status()
    return time.perf_counter() - start


async def fan_out(url: str, model: str, requests: int) -> list[dict]:
    """p50/p99 of a small request alone, then beside a large request that starts just before each small one."""
    big = {"model": model, "prompt": PROMPTS[:4], "n": 16, "max_tokens": 48}
    rows = []
    async with httpx.AsyncClient(timeout=600) as client:
        for mode in ("alone", "beside a 64-sequence request"):
            times = []
            for _ in range(requests):
                large = asyncio.ensure_future(client.post(url + "/v1/completions", json=big)) if mode != "alone" \
                    else None
                await asyncio.sleep(0.05 if large else 0)
                times.append(await small_latency(client, url, model))
                if large is not None:
                    (await large).raise_for_status()
            rows.append({"mode": mode, "requests": requests, "p50_ms": round(percentile(times, 0.5) * 1000, 1),
                         "p99_ms": round(percentile(times, 0.99) * 1000, 1)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--fan-out", action="store_true", help="a small request alone vs beside a large one")
    args = parser.parse_args()
    run = args.run
    if run is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.tiny_decoder import tiny_base, tiny_run

        tmp = Path(tempfile.mkdtemp(prefix="generate-load-"))
        run = str(tiny_run(tmp, tiny_base(tmp / "base"), "tiny"))
    model = Path(run).resolve().name
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"load average at the start: {os.getloadavg()[0]:.2f}", flush=True)
    if args.fan_out:
        proc, url = start_server(run, "--precision", "fp32", "--max-batch-size", "32")
        try:
            asyncio.run(fan_out(url, model, args.requests))
        finally:
            stop_server(proc)
        print(f"load average at the end: {os.getloadavg()[0]:.2f}", flush=True)
        return
    rows = []
    for mode, extra in (("served, batched", ["--max-batch-size", "32"]), ("served, one at a time",
                                                                          ["--no-batching"])):
        proc, url = start_server(run, "--precision", "fp32", *extra)
        try:
            for c in args.concurrency:
                rows.append({"mode": mode, "concurrency": c,
                             **asyncio.run(load(url, model, c, max(args.requests, c), args.max_tokens))})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            stop_server(proc)
    for c in args.concurrency:
        rows.append({"mode": "plain model.generate loop", "concurrency": c,
                     **plain_loop(run, c, max(args.requests, c), args.max_tokens)})
        print(json.dumps(rows[-1]), flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}", flush=True)
    print("\n| mode | concurrency | output tokens/s | TTFT p50 (ms) | TTFT p99 (ms) | errors |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['concurrency']} | {r['tokens_per_s']} | {r['ttft_p50_ms']} | {r['ttft_p99_ms']} | "
              f"{r['errors']} |")


if __name__ == "__main__":
    main()
