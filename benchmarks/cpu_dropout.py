"""Training steps with torch's CPU dropout vs tunecraft's (train/dropout.py), interleaved in one process so that the
machine's load falls on every arm: a full fine-tune step of all-MiniLM-L6-v2 (batch 32 × 27 tokens, the `mr` mean,
a third of the rows padded from token 20; bf16 autocast, fused AdamW), the median of the rounds. Arms: torch's
dropout and SDPA; `MaskedDropout` layers with SDPA (attention dropout by SDPA's math path); `MaskedDropout` layers
and the attention function with the same masks (what the loop runs on CPU).

    python benchmarks/cpu_dropout.py [--threads 1 2] [--rounds 7] [--steps 5] [--profile]

--profile: afterwards, torch.profiler's table (self CPU time by op) of 5 steps as the loop runs them on the last
thread count, gradient clipping included as in the loop.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def minilm_full_finetune():
    """all-MiniLM-L6-v2 with a 2-label head in train mode and its fused AdamW, as the loop builds them for a full
    fine-tune (glibc's freed-memory thresholds raised as the training session does), seed 0."""
    from transformers import AutoModelForSequenceClassification

    from tunecraft.assets import model_path
    from tunecraft.train.memory import keep_freed_memory

    keep_freed_memory()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_path("minilm-l6"), num_labels=2).train()
    return model, torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)


def batch(length: int, rows: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random token ids (rows × length), an all-ones attention mask and random binary labels."""
    ids = torch.randint(1000, 20000, (rows, length))
    return ids, torch.ones_like(ids), torch.randint(0, 2, (rows,))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--length", type=int, default=27)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    from tunecraft.train.dropout import masked_dropout

    model, optimizer = minilm_full_finetune()
    ids, mask, labels = batch(args.length)
    mask[::3, 20:] = 0

    def steps() -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        return (time.perf_counter() - start) / args.steps * 1000

    arms = {"torch": lambda: masked_dropout(model, enabled=False),
            "layers": lambda: masked_dropout(model, attention=False), "masked": lambda: masked_dropout(model)}
    print("| threads | torch dropout (ms/step) | MaskedDropout layers (ms/step) | layers + attention (ms/step) | "
          "speed-up |")
    print("|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        times = {arm: [] for arm in arms}
        steps()
        for _ in range(args.rounds):
            for arm, swap in arms.items():
                with swap():
                    times[arm].append(steps())
        a, b, c = (statistics.median(times[arm]) for arm in arms)
        print(f"| {threads} | {a:.1f} | {b:.1f} ({a / b:.3f}×) | {c:.1f} | {a / c:.3f}× |")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with masked_dropout(model), profile(activities=[ProfilerActivity.CPU]) as prof:
            steps()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
