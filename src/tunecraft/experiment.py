"""A training run with its comparisons (what `tunecraft train` runs): the baselines the task offers and, for a
generative task, the base model before training, scored on the same held-out split and written beside the
result in summary.json and the report. `tunecraft.train` itself only fits, evaluates and exports."""

from __future__ import annotations

import json
import os

import torch

from .config import RunConfig
from .evaluate.task_baselines import baselines_of
from .io import write_json, write_jsonl
from .models import prepare_base
from .tasks import build_task
from .train.job import model_meta, train
from .train.session import check_run_dir
from .trained import predict_with_run


def experiment(config: RunConfig, resume: bool = False, overwrite: bool = False, plugins=()) -> dict:
    """Train as the config says (tunecraft.train) and compare: returns the run summary with "baselines" and,
    for generative tasks, metrics["before"] (the base model on the same split and prompts)."""
    check_run_dir(config, resume, overwrite)  # before the comparisons' work, as train() would
    task = build_task(config.task).hand_runs(predict_with_run)
    task.check_config(config)
    data = task.load_data(config.data)
    base = prepare_base(config.model, lambda: task.training_texts(data.train))
    offered = baselines_of(task.NAME)
    offered.check(config, data, base)  # a bad baseline set-up fails before training
    run_dir = config.run_dir
    saved = run_dir / "before.json"
    before = None
    if task.GENERATIVE and (data.test or data.validation) and os.environ.get("RANK", "0") == "0":
        before = json.loads(saved.read_text(encoding="utf-8")) if resume and saved.is_file() else None
        before = before or base_model_scores(config, task, data, base)

    def fit(sub_config, data):
        return train(sub_config, overwrite=True, data=data)

    def compare(summary: dict) -> None:  # process 0, before close writes summary.json and the report
        if before is not None:
            write_json(run_dir / "before.json", before)
            add_before(config, summary, before)
        single = summary["processes"] == 1
        summary["baselines"] = offered.run(task, config, data, base, run_dir, fit if single else None)

    return train(config, resume=resume, overwrite=overwrite, plugins=plugins, data=data, compare=compare)


@torch.no_grad()
def base_model_scores(config: RunConfig, task, data, base) -> dict:
    """The untrained base model on the run's held-out split: the task's metrics and its generations."""
    from .runtime.precision import resolve as resolve_precision

    examples = data.test or data.validation
    meta = model_meta(config, task, data.label_map, data.columns)
    enc = task.encode(base.processor, examples, meta, data.label_map)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = task.build_model(base, data.label_map, config.model.dropout).to(device)
    _, dtype = resolve_precision(config.train.precision)
    scores = task.infer(model, enc, config.train.batch_size * 2, base.pad_id, device, dtype)
    before = task.evaluate(scores, enc, data.label_map)
    before.update(task.generation_eval(model, base.tokenizer, examples, meta.get("generation") or {}, dtype))
    return before


def add_before(config: RunConfig, summary: dict, before: dict) -> None:
    """metrics["before"], and each generated answer beside the base model's (generations.jsonl, the report)."""
    before = dict(before)
    base_rows = before.pop("generations", [])
    metrics = summary["metrics"]
    metrics["before"] = before
    path = config.folder.generations_file
    if not path.is_file():
        return
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    for row, base_row in zip(rows, base_rows):
        row["before"] = base_row["output"]
    write_jsonl(path, rows)
    metrics["samples_shown"] = rows[: config.task.generation.report_samples]  # generations: a generative task
