"""Do class weights and the balanced sampler help on an imbalanced training set? (#36 item 2)

The bundled mr sentences, split once by a fixed seed: a balanced test split (10%), and a training file holding
every positive training sentence but only one negative for each `--ratio` positives. The demo's LoRA recipe
(recipes/mr-lora.yaml, MiniLM-L6) trains on it plain, with `train.class_weights=balanced` and with
`train.sampler=balanced`, for each seed; the test split scores each (macro-F1, accuracy, the minority class's
recall), printed as mean ± std over the seeds.

    python benchmarks/class_weights.py [--seeds 1 2 3] [--ratio 10] [--epochs 2]

Runs go to runs/class-weights-bench/<setting>-s<seed>/; a run that already has summary.json is read, not
trained again.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
from pathlib import Path

OUT = Path("runs/class-weights-bench")
SETTINGS = {"plain": [], "class-weights": ["train.class_weights=balanced"], "sampler": ["train.sampler=balanced"]}
MINORITY = "negative"


def write_files(ratio: int) -> tuple[Path, Path]:
    """train.csv (every positive, 1 negative per `ratio` positives) and test.csv (balanced), from mr."""
    from tunecraft.data.bundled import read_bundled
    from tunecraft.data.dataset import seeded_split

    test, train = seeded_split(read_bundled("mr"), [0.1], 42)
    positives = [e for e in train if e.label != MINORITY]
    negatives = [e for e in train if e.label == MINORITY]
    kept = random.Random(0).sample(negatives, len(positives) // ratio)
    OUT.mkdir(parents=True, exist_ok=True)
    paths = OUT / "train.csv", OUT / "test.csv"
    for path, rows in zip(paths, (positives + kept, test)):
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows((e.text, e.label) for e in rows)
    print(f"train: {len(positives)} positive + {len(kept)} negative; test: {len(test)} "
          f"({sum(e.label == MINORITY for e in test)} negative)", flush=True)
    return paths


def run(setting: str, seed: int, files: tuple[Path, Path], epochs: int) -> dict:
    import json

    from tunecraft.config import load_config
    from tunecraft.train import train

    folder = OUT / f"{setting}-s{seed}"
    if (folder / "summary.json").is_file():
        return json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    overrides = [*SETTINGS[setting], f"seed={seed}", f"name={folder.name}", f"output_dir={OUT}",
                 "data.dataset=null", f"data.train={files[0]}", f"data.test={files[1]}", f"train.epochs={epochs}",
                 "train.early_stopping.patience=null", "train.eval_each_epoch=false", "train.progress=false",
                 "train.tensorboard=false", "baselines.zero_shot=false", "baselines.shots=[]"]
    return train(load_config("recipes/mr-lora.yaml", overrides), overwrite=True)


def minority_recall(summary: dict) -> float:
    return summary["metrics"]["per_class"][MINORITY]["recall"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--ratio", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    files = write_files(args.ratio)
    print("| setting | macro-F1 | accuracy | negative recall | seeds |\n|---|---|---|---|---|")
    for setting in SETTINGS:
        summaries = [run(setting, seed, files, args.epochs) for seed in args.seeds]
        cells = []
        for values in ([s["metrics"]["macro_f1"] for s in summaries], [s["metrics"]["accuracy"] for s in summaries],
                       [minority_recall(s) for s in summaries]):
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f}")
        print(f"| {setting} | {' | '.join(cells)} | {len(summaries)} |", flush=True)


if __name__ == "__main__":
    main()
