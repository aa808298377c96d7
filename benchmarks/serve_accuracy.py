"""Accuracy of what a server answers, per configuration: every test sentence of the run's own split sent alone
to the server's app (in-process, FastAPI's TestClient: the routes, the batcher and the held weights of
`tunecraft serve`), against the gold labels and against `tunecraft predict` (batches of 64) at that precision.

    python benchmarks/serve_accuracy.py FOLDER:PRECISION [FOLDER:PRECISION ...] [--data mr]

e.g. runs/mr-lora:fp32 runs/mr-lora:bf16 runs/mr-lora/compressed/onnx-int8-dynamic:auto
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fastapi.testclient import TestClient

from tunecraft import predict
from tunecraft.evaluate.runs import _split_settings
from tunecraft.runs import read_meta, run_model_dir
from tunecraft.serve.app import ServeSettings, create_app
from tunecraft.tasks import build_task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("configs", nargs="+", help="FOLDER:PRECISION (precision: auto, fp32 or bf16)")
    parser.add_argument("--data", default="mr", help="a bundled dataset; its test split by the run's seed")
    args = parser.parse_args()

    print("| configuration | served accuracy (one text per request) | predict accuracy (batches of 64) | "
          "same label as predict | test sentences | s |")
    print("|---|---|---|---|---|---|")
    for config in args.configs:
        folder, precision = config.rsplit(":", 1)
        meta = read_meta(run_model_dir(folder))
        seed, fractions = _split_settings(Path(folder))  # a variant folder has none: mr-lora's 42, (0.1, 0.1)
        examples = build_task(meta).load_eval_examples(args.data, meta, "auto", "test", seed, fractions)
        texts, gold = [e.text for e in examples], [e.label for e in examples]
        start = time.perf_counter()
        with TestClient(create_app(ServeSettings(run=folder, precision=precision))) as client:
            served = []
            for text in texts:
                reply = client.post("/v1/classify", json={"texts": [text]})
                reply.raise_for_status()
                served.append(reply.json()["predictions"][0]["label"])
        seconds = time.perf_counter() - start
        local = [row["label"] for row in predict(folder, texts, precision=precision)]
        n = len(texts)
        served_acc = sum(s == g for s, g in zip(served, gold)) / n
        local_acc = sum(p == g for p, g in zip(local, gold)) / n
        same = sum(s == p for s, p in zip(served, local))
        print(f"| `{folder}` {precision} | {100 * served_acc:.2f} | {100 * local_acc:.2f} | {same} / {n} | {n} | "
              f"{seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
