"""Training steps with torch's CPU dropout vs tunecraft's MaskedDropout (train/dropout.py), interleaved in one
process so that the machine's load falls on both: a full fine-tune step of all-MiniLM-L6-v2 (batch 32 × 27 tokens,
the `mr` mean; bf16 autocast, fused AdamW), the median of the rounds.

    python benchmarks/cpu_dropout.py [--threads 1 2] [--rounds 7] [--steps 5] [--profile]

--profile: afterwards, torch.profiler's table (self CPU time by op) of 5 MaskedDropout steps on the last thread
count, gradient clipping included as in the loop.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--length", type=int, default=27)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    from transformers import AutoModelForSequenceClassification

    from tunecraft.assets import model_path
    from tunecraft.train.dropout import masked_dropout

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_path("minilm-l6"), num_labels=2).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
    ids = torch.randint(1000, 20000, (32, args.length))
    labels = torch.randint(0, 2, (32,))

    def steps() -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        return (time.perf_counter() - start) / args.steps * 1000

    print("| threads | torch dropout (ms/step) | MaskedDropout (ms/step) | speed-up |")
    print("|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        times = {"torch": [], "masked": []}
        steps()
        for _ in range(args.rounds):
            times["torch"].append(steps())
            with masked_dropout(model):
                times["masked"].append(steps())
        a, b = statistics.median(times["torch"]), statistics.median(times["masked"])
        print(f"| {threads} | {a:.1f} | {b:.1f} | {a / b:.3f}× |")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with masked_dropout(model), profile(activities=[ProfilerActivity.CPU]) as prof:
            steps()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
