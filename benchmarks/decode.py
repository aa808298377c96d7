"""Decoding a causal-LM run, side by side in one run: plain transformers `generate` (fp32, batch 1), tunecraft's
server at each --precision and concurrency, and llama.cpp on a GGUF export when llama-cpp-python is installed.
Greedy, the same prompts for all: output tokens/s, TTFT p50/p99, and parity counts (answers identical to plain
fp32 `generate`, and to the same server at concurrency 1).

    python benchmarks/decode.py RUN [--prompts 16] [--max-tokens 64] [--concurrency 1 8 32]
                                    [--precision auto bf16] [--gguf FILE]

llama.cpp is optional: `pip install llama-cpp-python==0.3.36` builds it from its sdist (about 15 minutes on
2 cores); make the file with `tunecraft export RUN --format gguf` and pass it as --gguf.

Without RUN, a tiny causal-LM run (tests/tiny_decoder.py) is built in a temporary folder first (mechanics only:
its numbers say nothing of a real model)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tunecraft.cpus import wait_briefly

wait_briefly()  # before torch: the plain loop's OpenMP threads wait as the server's do (cpus.py)
import torch  # noqa: E402
from generate_load import streamed_chat  # noqa: E402
from server_process import percentile, start_server, stop_server  # noqa: E402

from tunecraft.data.chat import BUNDLED_CHAT, cut_at_stops  # noqa: E402
from tunecraft.runs import read_meta  # noqa: E402


def bundled_prompts(n: int) -> list[str]:
    """The first user turn of the first `n` distinct bundled chitchat conversations."""
    seen = []
    for conversation in BUNDLED_CHAT["chitchat-en"]():
        text = conversation.messages[0]["content"]
        if text not in seen:
            seen.append(text)
        if len(seen) == n:
            break
    return seen


def row(name: str, answers: list[str], ttft: list[float], tokens: int, wall: float, plain, alone) -> dict:
    out = {"setup": name, "tokens_per_s": round(tokens / wall, 1),
           "ttft_p50_ms": round(percentile(ttft, 0.5) * 1000, 1),
           "ttft_p99_ms": round(percentile(ttft, 0.99) * 1000, 1)}
    if plain is not None:
        out["same_as_plain_fp32"] = f"{sum(a == b for a, b in zip(answers, plain))}/{len(plain)}"
    if alone is not None:
        out["same_as_concurrency_1"] = f"{sum(a == b for a, b in zip(answers, alone))}/{len(alone)}"
    print(json.dumps(out), flush=True)
    return out


def plain_generate(run: Path, prompts: list[str], max_tokens: int, stops: list[str]) -> tuple[list[str], dict]:
    """model.generate on the merged model/ in fp32, one prompt at a time, greedy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria

    model = AutoModelForCausalLM.from_pretrained(str(run / "model"), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(run / "model"))

    class First(StoppingCriteria):
        at = None

        def __call__(self, input_ids, scores, **kwargs):
            self.at = self.at or time.perf_counter()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    answers, ttft, tokens, start = [], [], 0, time.perf_counter()
    for prompt in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        first, began = First(), time.perf_counter()
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, stopping_criteria=[first],
                                 pad_token_id=tokenizer.pad_token_id)
        ttft.append(first.at - began)
        tokens += out.shape[1] - ids["input_ids"].shape[1]
        text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        answers.append(cut_at_stops(text, stops).strip())
    return answers, {"ttft": ttft, "tokens": tokens, "wall": time.perf_counter() - start}


async def served(url: str, model: str, prompts: list[str], concurrency: int, max_tokens: int):
    """Every prompt answered, in waves of `concurrency` requests sent together (prompts repeated to fill a wave
    larger than the set); the answers of each prompt's first copy."""
    answers, ttft, tokens = {}, [], 0
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        for at in range(0, len(prompts), concurrency):
            wave = [prompts[(at + i) % len(prompts)] for i in range(concurrency)]
            results = await asyncio.gather(*[streamed_chat(client, url, model, p, max_tokens, temperature=0)
                                             for p in wave])
            for prompt, (answer, first, n) in zip(wave, results):
                answers.setdefault(prompt, answer)
                ttft.append(first)
                tokens += n
        wall = time.perf_counter() - start
    return [answers[p] for p in prompts], {"ttft": ttft, "tokens": tokens, "wall": wall}


def llama_cpp(gguf: str, prompts: list[str], max_tokens: int, stops: list[str]) -> tuple[list[str], dict] | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama.cpp rows left out: pip install llama-cpp-python==0.3.36 (builds from its sdist, about 15 "
              "minutes), then pass --gguf FILE from `tunecraft export RUN --format gguf`", flush=True)
        return None
    llm = Llama(model_path=gguf, n_ctx=2048, n_threads=torch.get_num_threads(), verbose=False)
    answers, ttft, tokens, start = [], [], 0, time.perf_counter()
    for prompt in prompts:
        began, first, parts = time.perf_counter(), None, []
        for chunk in llm.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=max_tokens,
                                                temperature=0, stream=True):
            piece = chunk["choices"][0]["delta"].get("content")
            if piece:
                first = first or time.perf_counter() - began
                parts.append(piece)
                tokens += 1  # one streamed piece per token
        ttft.append(first or time.perf_counter() - began)
        answers.append(cut_at_stops("".join(parts), stops).strip())
    return answers, {"ttft": ttft, "tokens": tokens, "wall": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--precision", nargs="+", default=["auto", "bf16"], choices=["auto", "fp32", "bf16"])
    ap.add_argument("--gguf", help="a GGUF export of RUN, for the llama.cpp rows")
    args = ap.parse_args()
    if args.run is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.tiny_decoder import tiny_base, tiny_run

        tmp = Path(tempfile.mkdtemp())
        args.run = str(tiny_run(tmp, tiny_base(tmp / "base"), "chat"))
    run = Path(args.run)
    name, stops = run.resolve().name, read_meta(run / "model")["generation"]["stop"]
    prompts = bundled_prompts(args.prompts)
    rows = []
    plain, stats = plain_generate(run, prompts, args.max_tokens, stops)
    rows.append(row("plain transformers generate, fp32, batch 1", plain, **stats, plain=None, alone=None))
    for precision in args.precision:
        proc, url = start_server(str(run), "--precision", precision, "--max-new-tokens", str(args.max_tokens))
        try:
            first = None
            for c in args.concurrency:
                answers, stats = asyncio.run(served(url, name, prompts, c, args.max_tokens))
                first = first or answers
                rows.append(row(f"tunecraft serve --precision {precision}, {c} concurrent", answers, **stats,
                                plain=plain, alone=first))
        finally:
            stop_server(proc)
    if args.gguf:
        got = llama_cpp(args.gguf, prompts, args.max_tokens, stops)
        if got:
            rows.append(row(f"llama.cpp {Path(args.gguf).name}, batch 1", got[0], **got[1], plain=plain, alone=None))
    print(json.dumps({"run": str(run), "prompts": len(prompts), "max_tokens": args.max_tokens, "rows": rows}))


if __name__ == "__main__":
    main()
