"""LoRA step time with the frozen base weights held in bf16 (tunecraft's loop) against autocast re-casting
them at every use (plain autocast, what the loop did before), in one process, steps interleaved.

Same model (LoRA r=8 on all-MiniLM-L6-v2), the same real `mr` batches (batch 32, length-grouped), bf16 CPU
autocast, fused AdamW. The two arms alternate in blocks so that load from other processes hits both alike;
the median step time of each arm and their ratio are printed. The trained weights of the two arms are the same
bit for bit (tests/test_methods.py::test_frozen_weights_cast_once_to_bf16_train_bit_for_bit_the_same).

    python benchmarks/frozen_cast.py [--blocks 8] [--steps 5] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import platform
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="steps per block")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--method", default="lora", help="lora | ia3 | adapter | freeze")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoTokenizer

    from tunecraft.assets import model_path
    from tunecraft.config import build_config
    from tunecraft.data import LabelMap, load_classification_data
    from tunecraft.data.dataset import batch_order, collate, encode
    from tunecraft.methods import get_method
    from tunecraft.runtime.precision import frozen_linears_cast
    from tunecraft.tasks import build_task

    classification = build_task("classification")

    torch.manual_seed(0)
    labels = LabelMap(["negative", "positive"])
    cfg = build_config({"method": {"name": args.method}})
    model = get_method(args.method).apply(classification.build_model(model_path("minilm-l6"), labels), cfg.method,
                                          classification)
    model.train()
    tokenizer = AutoTokenizer.from_pretrained(model_path("minilm-l6"))
    data = load_classification_data(build_config({"data": {"dataset": "mr"}}).data)
    enc = encode(tokenizer, data.train, 128, labels, "label")
    order = batch_order(enc.lengths, 32, seed=0, epoch=0)
    batches = [collate(enc, idx, tokenizer.pad_token_id) for idx in order]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)

    def step(batch) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(**batch)
        out.loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    arms = {"held in bf16": lambda: frozen_linears_cast(model, torch.bfloat16),
            "re-cast by autocast": contextlib.nullcontext}
    times: dict[str, list[float]] = {name: [] for name in arms}
    tokens: dict[str, int] = {name: 0 for name in arms}
    step(batches[0])  # warm-up
    b = 1
    for _ in range(args.blocks):
        for name, context in arms.items():
            with context():
                for _ in range(args.steps):
                    batch = batches[b % len(batches)]
                    b += 1
                    times[name].append(step(batch))
                    tokens[name] += int(batch["attention_mask"].sum())
    held, plain = (statistics.median(times[n]) for n in arms)
    print(f"## {args.method} step, frozen weights held in bf16 vs re-cast ({dt.date.today()}, {platform.machine()}, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__})\n")
    print("| frozen Linear weights | median step (ms) | tokens/s | steps |")
    print("|---|---|---|---|")
    for name in arms:
        print(f"| {name} | {1000 * statistics.median(times[name]):.1f} | {tokens[name] / sum(times[name]):.0f} | "
              f"{len(times[name])} |")
    print(f"\nspeed-up (re-cast median / held median): **{plain / held:.3f}×**")


if __name__ == "__main__":
    main()
