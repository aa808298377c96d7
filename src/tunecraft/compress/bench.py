"""The trade-off report: accuracy, size and speed of every variant, measured in one process, interleaved.

Latency is the model's forward pass on pre-tokenized input (tokenization, ~0.1 ms, is the same for every
variant and left out); batch-1 latency over single test sentences, throughput over batches of 32 in test
order. All variants are loaded first and measured round-robin (the order rotating each round), so a change
in machine load spreads over all of them instead of favouring one.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ..data import LabelMap
from ..data.dataset import Encoded, collate
from ..io import write_json, write_text
from ..report import labelled_scatter
from ..runtime.inference import predict_logits
from ..tasks import build_task
from ..trained import load_trained
from .variant import count_params, gzip_mb, size_mb


class Bf16Autocast(torch.nn.Module):
    """The original model run under bf16 autocast (what `tunecraft eval` does by default on this CPU)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, **inputs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(**inputs)


def _batches(enc: Encoded, pad_id: int, size: int, count: int) -> list[dict[str, torch.Tensor]]:
    out = []
    for start in range(0, min(len(enc), size * count), size):
        batch = collate(enc, list(range(start, min(start + size, len(enc)))), pad_id)
        batch.pop("labels", None)
        out.append(batch)
    return out


@torch.no_grad()
def _timed(model, batches: list[dict]) -> list[float]:
    times = []
    for batch in batches:
        start = time.perf_counter()
        model(**batch)
        times.append(time.perf_counter() - start)
    return times


def benchmark(variants: dict[str, Path], test_enc: Encoded, labels: LabelMap, threads: int = 2,
              latency_samples: int = 200, throughput_batches: int = 8, rounds: int = 5,
              bf16_reference: bool = True) -> dict:
    """variants: name → model/run folder, the first being the original. Returns rows and the setup."""
    torch.set_num_threads(threads)  # before loading: ONNX Runtime sessions take the same thread count
    loaded = {name: load_trained(path) for name, path in variants.items()}
    original = next(iter(loaded))
    models = {name: t.model for name, t in loaded.items()}
    if bf16_reference and torch.backends.mkldnn.is_available():
        models[f"{original} (bf16 autocast)"] = Bf16Autocast(loaded[original].model)
    pad_id = loaded[original].pad_id
    task = build_task(loaded[original].meta)
    single = _batches(test_enc, pad_id, 1, latency_samples)
    full = _batches(test_enc, pad_id, 32, throughput_batches)
    load_before = os.getloadavg()

    quality = {}
    for name, model in models.items():
        logits = predict_logits(model, test_enc, 64, pad_id, torch.device("cpu"))
        quality[name] = task.evaluate(logits, test_enc, labels)
        _timed(model, single[:10] + full[:2])  # warm-up

    latency: dict[str, list[float]] = {n: [] for n in models}
    batch_time: dict[str, list[float]] = {n: [] for n in models}
    names = list(models)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            latency[name] += _timed(models[name], single)
            batch_time[name] += _timed(models[name], full)
    load_after = os.getloadavg()

    examples_per_round = sum(len(b["input_ids"]) for b in full)
    rows = []
    for name in names:
        ms = np.array(latency[name]) * 1000
        folder = variants.get(name, variants[original])
        meta = loaded[name].meta if name in loaded else loaded[original].meta
        rows.append({
            "variant": name, "accuracy": quality[name]["accuracy"], "macro_f1": quality[name]["macro_f1"],
            "params": count_params(folder), "size_mb": round(size_mb(folder), 2),
            "gzip_mb": round(gzip_mb(folder), 2),
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "throughput": examples_per_round * rounds / sum(batch_time[name]),
            "format": meta.get("format", "transformers"), "notes": describe(meta),
        })
    base = rows[0]
    for row in rows:
        row["speedup_p50"] = base["p50_ms"] / row["p50_ms"]
        row["speedup_throughput"] = row["throughput"] / base["throughput"]
        row["accuracy_drop_points"] = 100 * (base["accuracy"] - row["accuracy"])
    return {"rows": rows, "setup": {
        "date": dt.date.today().isoformat(), "threads": threads, "torch": torch.__version__,
        "cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
        "test_examples": len(test_enc), "latency_samples": len(single) * rounds,
        "throughput_examples": examples_per_round * rounds, "rounds": rounds,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after]}}


def describe(meta: dict) -> str:
    """One line on what a variant is, from its tunecraft.json."""
    parts = []
    if "distillation" in meta:
        d = meta["distillation"]
        parts.append(f"{d['student_layers']}-layer student ({d['init']} init"
                     + (f", teacher layers {d['teacher_layers']}" if "teacher_layers" in d else "")
                     + f"), T={d['temperature']}")
    if "pruning" in meta:
        p = meta["pruning"]
        if "target_sparsity" in p:
            parts.append(f"sparsity {p['measured_sparsity']:.4f} (asked {p['target_sparsity']})")
        if "kept_heads" in p:
            kept = sum(len(v) for v in p["kept_heads"].values())
            total = sum(len(row) for row in p["head_importance"])
            parts.append(f"{kept} of {total} heads kept")
        if "dropped_layers" in p:
            parts.append(f"layers {p['dropped_layers']} removed")
        if p.get("recover_steps"):
            parts.append(f"{p['recover_steps']} recovery steps")
    if "quantization" in meta:
        parts.append(f"int8 dynamic, {meta['quantization']['backend']}")
    if "onnx" in meta:
        o = meta["onnx"]
        kind = {"none": "fp32", "dynamic": "int8 dynamic", "static": "int8 static (QDQ)"}[o["quantize"]]
        parts.append(f"ONNX Runtime {kind}, max |Δlogit| vs PyTorch {o['max_abs_logit_diff_vs_pytorch']:.1e}"
                     + (f", {o['calibration_samples']} calibration samples" if "calibration_samples" in o else ""))
    return "; ".join(parts)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(result: dict) -> str:
    header = ("| variant | accuracy | macro-F1 | params | size MB | gzip MB | p50 ms (b=1) | p95 ms (b=1) "
              "| throughput /s (b=32) | speed-up p50 | speed-up throughput |\n" + "|---" * 11 + "|")
    lines = [header]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {100 * r['accuracy']:.2f} | {100 * r['macro_f1']:.2f} | "
                     f"{r['params'] / 1e6:.2f} M | {r['size_mb']:.1f} | {r['gzip_mb']:.1f} | {r['p50_ms']:.2f} | "
                     f"{r['p95_ms']:.2f} | {r['throughput']:.0f} | {r['speedup_p50']:.2f}× | "
                     f"{r['speedup_throughput']:.2f}× |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    return labelled_scatter([(r["variant"], r["p50_ms"], 100 * r["accuracy"]) for r in result["rows"]],
                            "p50 latency, batch 1 (ms)", "test accuracy (%)", path)


def write(result: dict, out: Path, run: Path) -> Path:
    """report.md, report.json and accuracy_latency.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    image = plot(result, out / "accuracy_latency.png")
    s = result["setup"]
    notes = "\n".join(f"- **{r['variant']}**: {r['notes']}" for r in result["rows"] if r["notes"])
    text = (f"# Compression of {run} — {s['date']}\n\n"
            f"{s['cpu']}, {s['cores']} cores, {s['threads']} threads, torch {s['torch']}; load average "
            f"{s['load_average_before']} before, {s['load_average_after']} after. Accuracy on "
            f"{s['test_examples']} test examples; latency over {s['latency_samples']} batch-1 forward passes, "
            f"throughput over {s['throughput_examples']} examples in batches of 32, {s['rounds']} interleaved "
            f"rounds after warm-up. Speed-ups are against the first row.\n\n{table(result)}\n\n{notes}\n\n"
            f"![accuracy vs latency]({image.name})\n")
    write_text(out / "report.md", text)
    write_json(out / "report.json", result)
    return out / "report.md"
