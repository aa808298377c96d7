"""The same DPO job through tunecraft (`task: preference`) and through TRL's DPOTrainer written as its docs show a
user: LoRA on the same base, the same pairs, steps, batch, learning rate, β and max_length, each in its own
process. Prints one JSON line per side and their ratio: training tokens/s, peak RSS, and the held-out
implicit-reward accuracy (TRL's eval_rewards/accuracies counts a tie as wrong; after training there are none).

    python benchmarks/dpo_throughput.py --pairs runs/chitchat-spin --steps 12 --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_tunecraft(args, out: Path) -> dict:
    from tunecraft.config import build_config
    from tunecraft.train import train

    config = build_config({
        "name": "tunecraft", "output_dir": str(out), "seed": 0, "task": "preference",
        "model": {"base": args.base, "max_length": args.max_length},
        "data": {"dataset": None, "train": f"{args.pairs}/train.jsonl", "validation": f"{args.pairs}/test.jsonl",
                 "test": f"{args.pairs}/test.jsonl", "preference": {"overlong": "truncate"}},
        "method": {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0},
        "preference": {"objective": "dpo", "beta": args.beta},
        "generation": {"eval_samples": 0},
        "train": {"max_steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "warmup_ratio": 0,
                  "scheduler": "linear", "weight_decay": 0.0, "eval_each_epoch": False, "num_threads": args.threads,
                  "progress": False, "tensorboard": False, "precision": args.precision}})
    summary = train(config)
    return {"tokens_per_second": summary["tokens_per_second"], "train_seconds": summary["train_seconds"],
            "accuracy": summary["metrics"]["accuracy"]}


def run_trl(args, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from tunecraft.models import resolve_base

    torch.set_num_threads(args.threads)

    def rows(split):
        out = []
        for line in Path(f"{args.pairs}/{split}.jsonl").read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            out.append({"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
                        "rejected": [{"role": "assistant", "content": r["rejected"]}]})
        return Dataset.from_list(out)

    path = str(resolve_base(args.base))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = DPOConfig(output_dir=str(out / "trl"), per_device_train_batch_size=args.batch_size,
                       per_device_eval_batch_size=args.batch_size * 2, max_steps=args.steps,
                       learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                       beta=args.beta, max_length=args.max_length, bf16=args.precision == "bf16", use_cpu=True,
                       report_to="none", save_strategy="no", logging_steps=1, seed=0)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    trainer = DPOTrainer(model=model, args=config, train_dataset=rows("train"), eval_dataset=rows("test"),
                         processing_class=tokenizer, peft_config=lora)
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    tokens = max(h.get("num_tokens", 0) for h in trainer.state.log_history)
    metrics = trainer.evaluate()
    return {"tokens_per_second": round(tokens / seconds, 1), "train_seconds": round(seconds, 2),
            "train_runtime": result.metrics["train_runtime"], "accuracy": metrics["eval_rewards/accuracies"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="smollm2-135m")
    p.add_argument("--pairs", required=True, help="a folder with train.jsonl and test.jsonl (align/spin.py)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--side", choices=["tunecraft", "trl"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        with tempfile.TemporaryDirectory() as tmp:
            result = (run_tunecraft if args.side == "tunecraft" else run_trl)(args, Path(tmp))
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print("RESULT " + json.dumps({"side": args.side, **result}), flush=True)
        return
    results = {}
    for side in ("tunecraft", "trl"):
        proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--side", side], capture_output=True,
                              text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
        results[side] = json.loads(line[len("RESULT "):])
        print(json.dumps(results[side]), flush=True)
    ratio = results["tunecraft"]["tokens_per_second"] / max(results["trl"]["tokens_per_second"], 1e-9)
    print(json.dumps({"tokens_per_second_ratio_tunecraft_over_trl": round(ratio, 3)}))


if __name__ == "__main__":
    main()
