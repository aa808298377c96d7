"""Write the `source` task for recipes/mixed-stream.yaml: which collection a snippet comes from.

A second, different classification task built from the bundled sentiment data: label = the collection
(amazon, mr, nyt, tweets), text = a snippet drawn from that collection's *training* split only (the same
seeded split as `data.dataset: <name>`, seed 42), so no sentiment test text is ever trained on. Its label set
differs from sentiment's, so a stream that mixes it in gets a second head and a real change of task.

    python benchmarks/source_task.py [--out runs/data/source.csv] [--per-source 750] [--seed 42]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
from pathlib import Path

from tunecraft.config import SplitConfig
from tunecraft.data.bundled import read_bundled
from tunecraft.data.dataset import seeded_split

SOURCES = ("mr", "amazon", "tweets", "nyt")


def source_rows(per_source: int, seed: int) -> list[tuple[str, str]]:
    split = SplitConfig()
    rows = []
    for name in SOURCES:
        _, _, train = seeded_split(read_bundled(name), [split.test, split.validation], split.seed)
        picked = random.Random(seed).sample(train, min(per_source, len(train)))
        rows += [(example.text, name) for example in picked]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/data/source.csv")
    parser.add_argument("--per-source", type=int, default=750)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(source_rows(args.per_source, args.seed))
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
