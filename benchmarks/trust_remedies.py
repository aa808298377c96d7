"""Do the trust remedies help with few labels? Trains recipes/mr-500-remedies.yaml plain and with each
remedy, for 3 seeds, then evaluates every run for robustness (out-of-domain sets, perturbations, ECE).

    python benchmarks/trust_remedies.py train        [--seeds 1 2 3] [--remedies plain fgm ...]
    python benchmarks/trust_remedies.py robustness   [--max-examples N] (on every finished run)
    python benchmarks/trust_remedies.py table        (markdown tables: test accuracy mean ± std, robustness)
    python benchmarks/trust_remedies.py sanity       [--texts 200] [--k 1 3] [--steps 20] (attribution deletion check)

Runs go to runs/trust-bench/<remedy>-s<seed>/; a run that already has summary.json is not trained again,
so the phases can be re-run after an interruption.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

RECIPE = "recipes/mr-500-remedies.yaml"
OUT = Path("runs/trust-bench")
REMEDIES = {
    "plain": [],
    "label-smoothing": ["train.label_smoothing=0.1"],
    "llrd": ["train.layer_lr_decay=0.8"],
    "fgm": ["train.adversarial.method=fgm"],
    "r-drop": ["train.rdrop.alpha=1.0"],
    "eda": ["data.augment.copies=1"],
    "pgd": ["train.adversarial.method=pgd", "train.adversarial.steps=2"],
}
# cheapest first; each remedy runs all its seeds before the next remedy starts


def run_dir(remedy: str, seed: int) -> Path:
    return OUT / f"{remedy}-s{seed}"


def cmd_train(args) -> None:
    from tunecraft.config import load_config
    from tunecraft.train import train

    for remedy in args.remedies:
        for seed in args.seeds:
            folder = run_dir(remedy, seed)
            if (folder / "summary.json").is_file():
                continue
            overrides = [*REMEDIES[remedy], f"seed={seed}", f"name={folder.name}", f"output_dir={OUT}",
                         "train.progress=false", "train.tensorboard=false",
                         "baselines.zero_shot=false"]  # the no-training baseline is not what this compares
            start = time.time()
            summary = train(load_config(RECIPE, overrides), overwrite=True)
            print(f"{folder.name}: test accuracy {summary['metrics']['accuracy']:.4f} "
                  f"({summary['steps']} steps, {time.time() - start:.0f} s)", flush=True)


def cmd_robustness(args) -> None:
    from tunecraft.evaluate.robustness import robustness

    for seed in args.seeds:
        for remedy in args.remedies:
            folder = run_dir(remedy, seed)
            if not (folder / "summary.json").is_file() or (folder / "robustness" / "robustness.json").is_file():
                continue
            start = time.time()
            result = robustness(folder, seed=0, max_examples=args.max_examples)
            print(f"{folder.name}: clean {result['clean']['accuracy']:.4f}, ECE {result['calibration']['ece']:.4f} "
                  f"({time.time() - start:.0f} s)", flush=True)


def cmd_sanity(args) -> None:
    """Attribution sanity check on the plain seed-1 run: delete the top-k IG tokens vs k random tokens."""
    import random

    from tunecraft.evaluate.explain import deletion_check
    from tunecraft.trained import load_trained

    folder = run_dir("plain", args.seeds[0])
    trained = load_trained(folder)
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in random.Random(0).sample(rows, min(args.texts, len(rows)))]
    start = time.time()
    result = {"run": str(folder)}
    result.update(deletion_check(trained.model, trained.tokenizer, texts, k=args.k, steps=args.steps, seed=0))
    result["seconds"] = round(time.time() - start, 1)
    (OUT / "attribution-sanity.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def _mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{100 * values[0]:.2f} (1 seed)"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def cmd_table(args) -> None:
    rows, robust = [], []
    for remedy in args.remedies:
        accs, seconds, per_set = [], [], {}
        for seed in args.seeds:
            folder = run_dir(remedy, seed)
            if not (folder / "summary.json").is_file():
                continue
            summary = json.loads((folder / "summary.json").read_text())
            accs.append(summary["metrics"]["accuracy"])  # in seed order
            seconds.append(summary["train_seconds"])
            path = folder / "robustness" / "robustness.json"
            if path.is_file():
                result = json.loads(path.read_text())
                for name, value in result["ood"].items():
                    per_set.setdefault(f"OOD {name}", []).append(value["accuracy"])
                for name, value in result["perturbations"].items():
                    per_set.setdefault(name, []).append(value["accuracy"])
                per_set.setdefault("ECE", []).append(result["calibration"]["ece"])
        per_seed = ", ".join(f"{100 * a:.2f}" for a in accs) or "—"
        rows.append((remedy, len(accs), _mean_std(accs), per_seed,
                     f"{statistics.mean(seconds):.0f}" if seconds else "—"))
        robust.append((remedy, per_set))
    print(f"Test accuracy on mr (1,004 test examples), 500 training examples, seeds {args.seeds}\n")
    print("| remedy | seeds done | test accuracy % (mean ± std) | per seed | training s (mean; load varied) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    columns = [c for _, per_set in robust for c in per_set]
    columns = list(dict.fromkeys(columns))
    if columns:
        print("\nRobustness (accuracy %, mean ± std over seeds; ECE in %)\n")
        print("| remedy | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
        for remedy, per_set in robust:
            print(f"| {remedy} | " + " | ".join(_mean_std(per_set.get(c, [])) for c in columns) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["train", "robustness", "table", "sanity"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--max-examples", type=int, default=None,
                        help="robustness: evaluate a seeded sample of this many examples per set")
    parser.add_argument("--remedies", nargs="+", default=list(REMEDIES), choices=list(REMEDIES))
    parser.add_argument("--texts", type=int, default=200, help="sanity: test texts to attribute")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3], help="sanity: tokens deleted")
    parser.add_argument("--steps", type=int, default=20, help="sanity: integration steps")
    args = parser.parse_args(argv)
    {"train": cmd_train, "robustness": cmd_robustness, "table": cmd_table, "sanity": cmd_sanity}[args.phase](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
