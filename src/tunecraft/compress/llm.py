"""`tunecraft compress RUN ...` for generative (causal-LM) runs: weight-only int8 / int4 (torchao) and GGUF files
(f16, q8_0, q4_0) of the run's merged model, each measured against it in one report.

Variant names:
  int8        torchao Int8WeightOnlyConfig: int8 weights, one scale per output row; fp32 activations
  int4        torchao IntxWeightOnlyConfig(int4, groups of 32): the CPU int4 path (the packed int4 formats of
              Int4WeightOnlyConfig need CUDA or the mslk kernels, neither of which runs here); its values are
              int4, stored unpacked one per byte, so the folder is no smaller than int8's
  gguf-f16, gguf-q8_0, gguf-q4_0 (also f32, bf16)   the GGUF file `tunecraft export --for gguf` writes, measured
              as transformers' GGUF loader reads it back (dequantized to fp32: the quality of the file's
              weights; speed and size on llama.cpp are its own and not measured here)
  all         int8 int4 gguf-f16 gguf-q8_0 gguf-q4_0

The starting point is model/, which for a LoRA run is the adapter merged into the base. Rows: size of the weight
files, held-out perplexity on the run's test split, greedy agreement with the original (identical answers, and
tokens that match before the first difference), decode tokens/s and p50 time to first token at batch 1.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from pathlib import Path

import numpy as np
import torch

from ..config import build_config
from ..errors import ConfigError, TunecraftError
from ..io import refuse_existing, write_json, write_text
from ..report import labelled_scatter
from ..runs import RunFolder
from ..tasks import build_task
from ..trained import load_trained
from .llm_variant import make_gguf, make_torchao
from .settings import Options
from .variant import size_mb

ALL = ["int8", "int4", "gguf-f16", "gguf-q8_0", "gguf-q4_0"]


def parse_variants(names: list[str]) -> list[str]:
    from ..export.gguf_file import TYPES

    wanted = [n for name in names for n in (ALL if name == "all" else [name])]
    if not wanted:
        raise ConfigError("name at least one variant, e.g. int8 int4 gguf-q8_0 (or all)")
    for name in wanted:
        match = re.fullmatch(r"gguf-(\w+)", name)
        if name not in ("int8", "int4") and not (match and match[1] in TYPES):
            raise ConfigError(f"unknown variant '{name}' for a causal-LM run; known: int8, int4, "
                              f"{', '.join('gguf-' + t for t in TYPES)}, all")
    return list(dict.fromkeys(wanted))


# -- measuring -----------------------------------------------------------------------------------------------------

def _agreement(reference: list[str], answers: list[str], tokenizer) -> tuple[float, float]:
    """(identical answers, tokens equal before the first difference / the reference's tokens)."""
    same = sum(a == b for a, b in zip(reference, answers)) / max(len(reference), 1)
    matched = total = 0
    for a, b in zip(reference, answers):
        ta, tb = (tokenizer(text, add_special_tokens=False)["input_ids"] for text in (a, b))
        total += len(ta)
        matched += next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
    return same, matched / max(total, 1)


@torch.no_grad()
def _timed_generate(model, tokenizer, text: str, new_tokens: int) -> float:
    batch = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    start = time.perf_counter()
    model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                   pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
    return time.perf_counter() - start


def benchmark(folders: dict[str, Path], conversations, options: Options) -> dict:
    """Every variant (the first is the original) on the same held-out conversations and prompts."""
    from ..data.chat import prompt_text

    torch.set_num_threads(options.threads)
    loaded = {name: load_trained(path) for name, path in folders.items()}
    original = loaded[next(iter(loaded))]
    task = build_task(original.meta)
    meta, tokenizer = original.meta, original.tokenizer
    enc = task.encode(tokenizer, conversations, meta)
    gen = {**meta["generation"], "temperature": 0.0, "eval_samples": options.llm_prompts}
    load_before = os.getloadavg()

    quality, answers = {}, {}
    for name, t in loaded.items():
        with torch.no_grad():
            scores = task.infer(t.model, enc, 8, tokenizer.pad_token_id, torch.device("cpu"))
            quality[name] = task.evaluate(scores, enc, None)
        answers[name] = [r["output"] for r in task.generation_eval(t.model, tokenizer, conversations, gen)
                         ["generations"]]
    prompts = [prompt_text(tokenizer, [{"role": "user", "content": c.messages[0]["content"]}])
               for c in conversations if c.messages and c.messages[0]["role"] == "user"][: options.llm_timed_prompts]
    new_tokens = meta["generation"]["max_new_tokens"]
    first: dict[str, list[float]] = {n: [] for n in loaded}
    decode: dict[str, list[float]] = {n: [] for n in loaded}
    names = list(loaded)
    for name in names:  # warm-up
        _timed_generate(loaded[name].model, tokenizer, prompts[0], 2)
    for r in range(options.rounds):  # interleaved, the order rotating each round (as the encoder benchmark)
        for name in names[r % len(names):] + names[: r % len(names)]:
            m = loaded[name].model
            for text in prompts:
                first[name].append(_timed_generate(m, tokenizer, text, 1))
                decode[name].append(_timed_generate(m, tokenizer, text, new_tokens))
    rows = []
    base_answers = answers[names[0]]
    for name in names:
        same, tokens = _agreement(base_answers, answers[name], tokenizer)
        ttft = float(np.percentile(np.array(first[name]) * 1000, 50))
        # decode speed: the tokens after the first over the time they took (prefill left out)
        decode_s = sum(decode[name]) - sum(first[name])
        fmt_ = loaded[name].meta.get("format", "transformers")
        detail = loaded[name].meta.get("quantization") or loaded[name].meta.get("gguf") or {}
        rows.append({"variant": name, "format": fmt_, "detail": detail, "size_mb": round(size_mb(folders[name]), 2),
                     "perplexity": quality[name]["perplexity"], "loss": quality[name]["loss"],
                     "same_answers": same, "token_agreement": tokens, "ttft_p50_ms": ttft,
                     "tokens_per_second": len(decode[name]) * (new_tokens - 1) / max(decode_s, 1e-9)})
    return {"rows": rows, "setup": {
        "date": dt.date.today().isoformat(), "threads": options.threads, "torch": torch.__version__,
        "test_conversations": len(conversations), "perplexity_tokens": quality[names[0]]["tokens"],
        "prompts": len(base_answers), "timed_prompts": len(prompts), "new_tokens": new_tokens,
        "rounds": options.rounds, "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()]}}


def table(result: dict) -> str:
    lines = ["| variant | size MB | perplexity | same answers | token agreement | tokens/s (b=1) | "
             "p50 first token ms |", "|---" * 7 + "|"]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {r['size_mb']:.1f} | {r['perplexity']:.3f} | {100 * r['same_answers']:.0f}% "
                     f"| {100 * r['token_agreement']:.1f}% | {r['tokens_per_second']:.1f} | {r['ttft_p50_ms']:.1f} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    return labelled_scatter([(r["variant"], r["size_mb"], r["perplexity"]) for r in result["rows"]],
                            "weight files (MB)", "held-out perplexity", path)


def write_report(result: dict, out: Path, run: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    image = plot(result, out / "perplexity_size.png")
    s = result["setup"]
    text = (f"# Compression of {run} — {s['date']}\n\n"
            f"{s['threads']} threads, torch {s['torch']}; load average {s['load_average_before']} before, "
            f"{s['load_average_after']} after. Perplexity over {s['perplexity_tokens']} learned tokens of "
            f"{s['test_conversations']} held-out conversations; greedy answers to {s['prompts']} held-out prompts "
            f"compared with the first row's; speed at batch 1 over {s['timed_prompts']} prompts × {s['rounds']} "
            f"interleaved rounds, {s['new_tokens']} new tokens each (tokens/s leaves the first token out; GGUF rows "
            "run as transformers reads the file back, not as llama.cpp would).\n\n"
            f"{table(result)}\n\n![perplexity vs size]({image.name})\n")
    write_text(out / "report.md", text)
    write_json(out / "report.json", result)
    return out / "report.md"


def compress_llm(run: Path, variants: list[str], out: Path, options: Options, measure: bool, overwrite: bool) -> dict:
    """Make and measure the named variants of a generative run (called by compress.job.compress)."""
    plan = parse_variants(variants)
    for name in plan:
        refuse_existing(out / name, overwrite)
    original = load_trained(run)
    if original.meta.get("adapter_required"):
        raise TunecraftError(f"{run}: method '{original.meta.get('method')}' keeps its trained part outside the "
                             "weights; compress takes lora (merged) and full runs")
    if any(n.startswith("gguf-") for n in plan):
        from ..export.gguf_file import check_exportable

        for name in plan:
            if name.startswith("gguf-"):
                check_exportable(original.model.config, name[5:])
    for name in plan:
        if name.startswith("gguf-"):
            make_gguf(original, out / name, name[5:], overwrite)
        else:
            make_torchao(original, out / name, name, overwrite)
    result: dict = {"variants": {n: {} for n in plan}, "folders": {n: str(out / n) for n in plan}}
    if measure:
        config = RunFolder(run).config(build_config)
        task = build_task(original.meta)
        data = task.load_data(config.data)
        conversations = (data.test or data.validation)[: options.llm_conversations]
        measured = benchmark({"original": Path(run), **{n: out / n for n in plan}}, conversations, options)
        result["measured"] = measured
        result["table"] = table(measured)
        result["report"] = str(write_report(measured, out, Path(run)))
    return result
