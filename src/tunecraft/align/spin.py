"""Preference pairs by the SPIN construction (Chen et al. 2024, "Self-Play Fine-Tuning Converts Weak Language
Models to Strong Language Models"): for each prompt of a bundled chat set, the human answer is chosen over the
model's own greedy answer. The set's fixed split by prompt (tasks/causal_lm.py `bundled_split`) is kept, so no
held-out prompt reaches the training pairs.

    python -m tunecraft.align.spin --base smollm2-135m --out runs/chitchat-spin

writes train.jsonl, validation.jsonl, test.jsonl (prompt as messages, chosen, rejected) and manifest.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..data.chat import BUNDLED_CHAT
from ..io import write_json, write_jsonl
from ..models import resolve_base
from ..tasks.causal_lm import bundled_split, generate


def spin_pairs(model, tokenizer, conversations: list, gen: dict, dtype=None) -> tuple[list[dict], int]:
    """Pairs for the conversations' last turns: (human answer, the model's greedy answer); a prompt the model
    answers exactly as the human did gives no pair. Returns the pairs and how many prompts gave none."""
    prompts = [c.messages[:-1] for c in conversations]
    answers = generate(model, tokenizer, prompts, {**gen, "temperature": 0.0}, gen["batch_size"], dtype)
    pairs = [{"prompt": p, "chosen": c.messages[-1]["content"], "rejected": a}
             for p, c, a in zip(prompts, conversations, answers)
             if a.strip() and a.strip() != c.messages[-1]["content"].strip()]
    return pairs, len(conversations) - len(pairs)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="smollm2-135m", help="the model whose answers are rejected (bundled or a folder)")
    p.add_argument("--dataset", default="chitchat-en", choices=sorted(BUNDLED_CHAT))
    p.add_argument("--out", required=True, help="folder for train/validation/test.jsonl")
    p.add_argument("--seed", type=int, default=42, help="the split's seed (data.split.seed of the recipes)")
    p.add_argument("--validation", type=float, default=0.1)
    p.add_argument("--test", type=float, default=0.1)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--max-prompts", type=int, nargs=3, metavar=("TRAIN", "VALIDATION", "TEST"),
                   help="at most this many prompts of each split (the first of its seeded order)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    args = p.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_base(args.base)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    gen = {"max_new_tokens": args.max_new_tokens, "temperature": 0.0, "top_p": 1.0, "stop": [],
           "batch_size": args.batch_size}
    out, started, counts = Path(args.out), time.time(), {}
    limits = dict(zip(("train", "validation", "test"), args.max_prompts or (None, None, None)))
    for split, conversations in bundled_split(args.dataset, args.seed, (args.validation, args.test)).items():
        conversations = conversations[: limits[split]]
        pairs, same = spin_pairs(model, tokenizer, conversations, gen, dtype)
        write_jsonl(out / f"{split}.jsonl", pairs)
        counts[split] = {"prompts": len(conversations), "pairs": len(pairs), "no_pair": same}
        print(f"{split}: {len(pairs)} pairs from {len(conversations)} prompts", flush=True)
    write_json(out / "manifest.json", {"construction": "SPIN: human answer chosen over the base's greedy answer",
                                       "base": args.base, "dataset": args.dataset, "seed": args.seed,
                                       "fractions": {"validation": args.validation, "test": args.test},
                                       "max_new_tokens": args.max_new_tokens, "max_prompts": args.max_prompts,
                                       "precision": args.precision,
                                       "splits": counts, "seconds": round(time.time() - started, 1)})


if __name__ == "__main__":
    main()
