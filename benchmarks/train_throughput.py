"""Training throughput: tunecraft vs a Hugging Face Trainer script, same job, one run, same machine.

Both sides fine-tune all-MiniLM-L6-v2 in full on the bundled `mr` split (seeds 42, 43, ...), same examples, epochs,
batch size, learning rate, max length and bf16 autocast; each side runs in its own process so that peak RSS
is its own. Prints a markdown table with tokens/s, the ratio, wall time, test accuracy, peak RSS and MFU
(model FLOP/s over this machine's bf16 matmul peak, measured at the start of the run).

    python benchmarks/train_throughput.py [--epochs 1] [--train-samples N] [--seeds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch


def matmul_seconds(m: int, k: int, n: int, repeats: int) -> float:
    """The best of `repeats` timings of one bf16 (m×k)·(k×n) product, after a warm-up."""
    a = torch.randn(m, k, dtype=torch.bfloat16)
    b = torch.randn(k, n, dtype=torch.bfloat16)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    return 2 * n**3 / matmul_seconds(n, n, n, repeats) / 1e9


def linear_ceiling_gflops(config, tokens: int, repeats: int = 20) -> float:
    """The FLOP rate of the model's own Linear matmuls at `tokens` per batch (the forward product and the two of
    its backward), bf16, best of `repeats` each: what MFU would be if nothing but these matmuls took time."""
    h, inter = config.hidden_size, config.intermediate_size
    flops = seconds = 0.0
    for k, n, count in ((h, h, 4), (h, inter, 1), (inter, h, 1)):  # q, k, v, o; FFN up; FFN down
        for shape in ((tokens, k, n), (tokens, n, k), (n, tokens, k)):  # y = xW, dx = dy·Wᵀ, dW = dyᵀ·x
            flops += count * 2 * shape[0] * shape[1] * shape[2]
            seconds += count * matmul_seconds(*shape, repeats)
    return flops / seconds / 1e9


def flops_per_token(config, seq_len: float) -> float:
    """Training FLOPs per token: 6·N (non-embedding weights) + 12·L·H·T attention (PaLM appendix B)."""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    n_non_embedding = layers * (4 * h * h + 2 * h * inter)
    return 6 * n_non_embedding + 12 * layers * h * seq_len


def load_split(train_samples: int | None):
    from tunecraft.config import build_config
    from tunecraft.data import load_classification_data

    data = {"dataset": "mr"}
    if train_samples:
        data["max_train_samples"] = train_samples
    return load_classification_data(build_config({"data": data}).data)


def tunecraft_config(output_dir: str, seed: int = 42, epochs: float = 1, train_samples: int | None = None,
                     batch_size: int = 32, max_length: int = 128, lr: float = 5e-5):
    """The tunecraft side's recipe: what a user would write for this job."""
    from tunecraft.config import build_config

    return build_config({
        "name": "bench", "output_dir": output_dir, "seed": seed,
        "data": {"dataset": "mr", **({"max_train_samples": train_samples} if train_samples else {})},
        "model": {"base": "minilm-l6", "max_length": max_length},
        "method": {"name": "full"},
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "precision": "bf16",
                  "eval_each_epoch": False, "tensorboard": False, "progress": False},
    })


def run_tunecraft(args) -> dict:
    from tunecraft.train import train

    summary = train(tunecraft_config(tempfile.mkdtemp(prefix="bench-tc-"), args.seed, args.epochs,
                                     args.train_samples, args.batch_size, args.max_length, args.lr))
    return {"train_seconds": summary["train_seconds"], "train_tokens": summary["train_tokens"],
            "padded_fraction": summary["padding_fraction"], "accuracy": summary["metrics"]["accuracy"],
            "avg_seq": summary["train_tokens"] / (summary["sizes"]["train"] * args.epochs)}


def run_trainer(args) -> dict:
    """Written as the transformers docs show a user (text classification guide), minus `datasets`."""
    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from tunecraft.assets import model_path

    data = load_split(args.train_samples)
    labels = data.label_map.label2id
    path = str(model_path("minilm-l6"))
    tokenizer = AutoTokenizer.from_pretrained(path)

    def tokenize(examples):
        rows = []
        for e in examples:
            row = tokenizer(e.text, truncation=True, max_length=args.max_length)
            row["label"] = labels[e.label]
            rows.append(row)
        return rows

    train_rows, test_rows = tokenize(data.train), tokenize(data.test)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, id2label=data.label_map.id2label, label2id=labels)
    training_args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-hf-"), learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
        num_train_epochs=args.epochs, weight_decay=0.01, warmup_steps=0.06, bf16=True, use_cpu=True,
        eval_strategy="no", save_strategy="no", report_to="none", logging_steps=50, seed=args.seed,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train_rows,
                      data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
    result = trainer.train()
    pred = trainer.predict(test_rows)
    accuracy = float((np.argmax(pred.predictions, axis=-1) == pred.label_ids).mean())
    tokens = sum(len(r["input_ids"]) for r in train_rows) * args.epochs
    return {"train_seconds": result.metrics["train_runtime"], "train_tokens": tokens, "accuracy": accuracy,
            "avg_seq": tokens / (len(train_rows) * args.epochs)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", choices=["tunecraft", "trainer"])
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--train-samples", type=int, default=None, help="default: the whole mr train split")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seeds", type=int, default=1, help="run each side with seeds 42, 43, ...: mean and spread")
    parser.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.side:
        result = run_tunecraft(args) if args.side == "tunecraft" else run_trainer(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result))
        return

    from transformers import AutoConfig

    from tunecraft.assets import model_path

    peak = matmul_peak_gflops()
    config = AutoConfig.from_pretrained(model_path("minilm-l6"))
    runs: dict[str, list[dict]] = {"tunecraft": [], "trainer": []}
    for seed in range(42, 42 + args.seeds):
        for side in runs:  # interleaved, so that a change in the machine's load falls on both sides
            cmd = [sys.executable, __file__, "--side", side, "--epochs", str(args.epochs), "--batch-size",
                   str(args.batch_size), "--max-length", str(args.max_length), "--lr", str(args.lr), "--seed",
                   str(seed)]
            if args.train_samples:
                cmd += ["--train-samples", str(args.train_samples)]
            start = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore"})
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(line[0][7:])
            row["wall_seconds"] = time.time() - start
            row["tokens_per_s"] = row["train_tokens"] / row["train_seconds"]
            row["mfu"] = row["tokens_per_s"] * flops_per_token(config, row["avg_seq"]) / (peak * 1e9)
            runs[side].append(row)
    avg_seq = runs["tunecraft"][0]["avg_seq"]
    ceiling = linear_ceiling_gflops(config, round(args.batch_size * avg_seq))

    def mean(side, key):
        return statistics.mean(r[key] for r in runs[side])

    def spread(side, key, scale=1.0, digits=0):
        values = [scale * r[key] for r in runs[side]]
        text = f"{statistics.mean(values):.{digits}f}"
        return text + (f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else "")

    ratio = mean("tunecraft", "tokens_per_s") / mean("trainer", "tokens_per_s")
    print(f"\n## Training throughput — {dt.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print(f"Job: full fine-tune of all-MiniLM-L6-v2 on `mr` ({args.train_samples or 'all'} training examples), "
          f"{args.epochs:g} epoch(s), batch {args.batch_size}, max length {args.max_length}, lr {args.lr:g}, bf16 "
          f"autocast; {args.seeds} seed(s) per side (mean ± standard deviation). Measured bf16 matmul peak "
          f"(2048³): {peak:.0f} GFLOP/s. The model's own Linear matmuls at this batch ({args.batch_size} × "
          f"{avg_seq:.1f} tokens, forward and backward shapes, best of 20 each) run at {ceiling:.0f} GFLOP/s: "
          f"**{ceiling / peak:.0%} of the peak, the MFU that a loop doing nothing but them would reach**.\n")
    print("| | training tokens/s | train time (s) | wall time (s) | test accuracy (%) | peak RSS (MB) | MFU (%) |")
    print("|---|---|---|---|---|---|---|")
    for side in runs:
        print(f"| {side} | {spread(side, 'tokens_per_s')} | {spread(side, 'train_seconds', digits=1)} | "
              f"{spread(side, 'wall_seconds', digits=1)} | {spread(side, 'accuracy', 100, 2)} | "
              f"{mean(side, 'peak_rss_mb'):.0f} | {spread(side, 'mfu', 100, 1)} |")
    print(f"\ntunecraft / Trainer throughput: **{ratio:.2f}×**")


if __name__ == "__main__":
    main()
