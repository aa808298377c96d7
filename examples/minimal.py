"""The smallest training program on tunecraft's own parts: a task, a method, the run session and the training
loop, nothing else (no baselines, no report, no plug-ins). It trains a tiny scratch encoder on a small slice of
the bundled movie-review set and prints its held-out accuracy.

    python examples/minimal.py [OUTPUT_DIR]

`tunecraft train RECIPE` does the same and more (train/job.py is the full version of this file)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tunecraft.config import build_config
from tunecraft.io import write_json
from tunecraft.methods import get_method
from tunecraft.models import prepare_base
from tunecraft.tasks import build_task
from tunecraft.train.job import model_meta
from tunecraft.train.session import RunSession


def recipe(output_dir: str):
    """What `tunecraft train` reads from a YAML recipe, as a dict: 2 steps of 8 on 64 reviews, fp32, one thread."""
    return build_config({
        "name": "minimal", "output_dir": output_dir, "seed": 7, "task": "classification",
        "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": 64},
        "data": {"dataset": "mr", "max_train_samples": 64, "max_eval_samples": 16},
        "method": {"name": "full"},
        "train": {"max_steps": 2, "batch_size": 8, "precision": "fp32", "progress": False, "tensorboard": False,
                  "num_threads": 1},
        "baselines": {"zero_shot": False}})


def main(output_dir: str) -> dict:
    config = recipe(output_dir)
    session = RunSession(config)  # the run folder, seed, threads and precision
    task = build_task(config.task)  # what the data, the model head, the loss and the metrics are
    data = task.load_data(config.data)
    base = prepare_base(config.model, lambda: task.training_texts(data.train))
    meta = model_meta(config, task, data.label_map, data.columns)
    train_enc = task.encode(base.processor, data.train, meta, data.label_map)
    test_enc = task.encode(base.processor, data.test, meta, data.label_map)

    method = get_method(config.method.name)  # which weights train
    model = method.apply(task.build_model(base, data.label_map, config.model.dropout), config.method, task)

    session.start(model, train_enc.lengths)
    loop = session.loop(model, task, train_enc, test_enc, data.label_map, base.pad_id)
    loop.run()
    metrics = loop.evaluate(test_enc, loop.evaluate_logits(test_enc))

    summary = {"name": config.name, "task": config.task.name, "metrics": metrics, **session.run_summary(loop)}
    return session.close(summary, lambda tmp: method.export(loop.model, tmp["model"], tmp["adapter"]),
                         ("model", "adapter"), lambda s: write_json(session.run_dir / "metrics.json", s["metrics"]),
                         base.processor, meta)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="tunecraft-minimal-")
    result = main(out)
    print(json.dumps({"run": str(Path(out) / "minimal"), "accuracy": result["metrics"].get("accuracy")}))
