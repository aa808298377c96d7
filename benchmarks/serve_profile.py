"""Where one short text's time goes on the server's inference thread, stage by stage, in-process (no HTTP):
tokenize (the task's encode), collate, forward, decode, and the whole `task.predict` call the server makes.
Compare the median of `predict` here with the HTTP p50 of benchmarks/serve_load.py for the HTTP and hop cost.

    python benchmarks/serve_profile.py RUN_OR_VARIANT [--threads 1] [--precision fp32 bf16-autocast bf16 bf16-model]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tunecraft.data import LabelMap
from tunecraft.data.dataset import collate
from tunecraft.data.readers import Example
from tunecraft.runtime.inference import autocast_context
from tunecraft.serve.precision import serving_model
from tunecraft.tasks import build_task
from tunecraft.tasks.classification import decode
from tunecraft.trained import load_trained

TEXT = "a gorgeous, witty, deeply moving film"


def median_ms(fn, reps: int) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def profile(run: str, precision: str, reps: int) -> list[float]:
    """Median ms of tokenize, collate, forward, decode and the whole task.predict for one text."""
    trained = load_trained(run)
    task = build_task(trained.meta)
    # bf16-autocast: the old server (fp32 weights under autocast); bf16-model: every weight in bf16, no autocast
    # (LayerNorm, softmax, GELU in bf16 too: other numbers); fp32 and bf16 as the server now holds them
    dtype = torch.bfloat16 if precision == "bf16-autocast" else None
    if precision == "bf16-model":
        trained.model.to(torch.bfloat16)
    elif precision != "bf16-autocast":
        trained, dtype = serving_model(trained, precision)
    labels = LabelMap(trained.meta["labels"])
    pad_id = trained.tokenizer.pad_token_id
    enc = task.encode(trained.tokenizer, [Example(text=TEXT)], trained.meta)
    batch = collate(enc, [0], pad_id)
    batch.pop("labels", None)

    def forward():
        with torch.no_grad(), autocast_context(torch.device("cpu"), dtype):
            return trained.model(**batch).logits.float()

    logits = forward()
    return [median_ms(lambda: task.encode(trained.tokenizer, [Example(text=TEXT)], trained.meta), reps),
            median_ms(lambda: collate(enc, [0], pad_id), reps),
            median_ms(forward, reps),
            median_ms(lambda: decode(logits, labels), reps),
            median_ms(lambda: task.predict(trained, [TEXT], 1, dtype, warn=False), reps)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16-autocast", "bf16"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"{args.run}, {args.threads} thread(s), one text of {len(TEXT.split())} words, median of {args.reps}\n")
    print("| precision | tokenize (ms) | collate (ms) | forward (ms) | decode (ms) | task.predict (ms) |")
    print("|---|---|---|---|---|---|")
    for precision in args.precision:
        row = profile(args.run, precision, args.reps)
        print(f"| {precision} | " + " | ".join(f"{v:.2f}" for v in row) + " |")


if __name__ == "__main__":
    main()
