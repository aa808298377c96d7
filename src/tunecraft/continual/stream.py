"""`tunecraft continual`: load the stream once, let each strategy learn it task by task, score the matrix."""

from __future__ import annotations

import logging
import resource
import shutil
import time

import torch

from ..errors import TunecraftError
from ..io import refuse_existing, write_json, write_text
from ..models import prepare_base
from ..runtime.precision import resolve as resolve_precision
from ..tasks import build_task
from .metrics import summarize
from .recipe import ContinualConfig, dump_continual
from .report import write_continual_report
from .strategies import LoadedTask, Stream, get_strategy

log = logging.getLogger(__name__)


def load_stream(config: ContinualConfig, overwrite: bool = True) -> Stream:
    """Every task's data (bad data fails here, before any training), the base, every test split tokenized."""
    configs = [config.task_config(i, "load") for i in range(len(config.stream))]
    classification = build_task(configs[0].task)
    loaded = [classification.load_data(c.data) for c in configs]
    for i, data in enumerate(loaded):
        if not data.test:
            raise TunecraftError(f"stream[{i}] ({config.stream[i].name}): the test split is empty; the stream "
                                 "scores every task on its test split (set data.split.test or data.test)")
    base = prepare_base(configs[0].model, lambda: classification.training_texts(loaded[0].train))
    tasks = []
    for i, (run_config, data) in enumerate(zip(configs, loaded)):
        meta = {"max_length": run_config.model.max_length, "label_column": data.columns.label}
        test_enc = classification.encode(base.tokenizer, data.test, meta, data.label_map)
        tasks.append(LoadedTask(i, config.stream[i].name, data, test_enc, meta))
    _, dtype = resolve_precision(configs[0].train.precision)
    return Stream(config, tasks, base, dtype, overwrite, classification)


def run_continual(config: ContinualConfig, overwrite: bool = False) -> dict:
    """Learn the stream with every strategy of the recipe; write continual.json, report.md/.html and one
    heatmap per strategy to <output_dir>/<name>/, and each task's run folder to <strategy>/<i>-<task>/."""
    run_dir = config.run_dir
    refuse_existing(run_dir, overwrite, "or name=... for a new run")
    num_threads = config.task_config(0, "load").train.num_threads
    if num_threads:
        torch.set_num_threads(num_threads)
    stream = load_stream(config)
    strategies = [get_strategy(cfg, stream) for cfg in config.strategies]
    for strategy in strategies:
        strategy.check()
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    write_text(config.folder.config_file, dump_continual(config))

    names = [t.name for t in stream.tasks]
    results = {"name": config.name, "tasks": names, "seed": config.seed,
               "sizes": {t.name: {"train": len(t.data.train), "test": len(t.data.test)} for t in stream.tasks},
               "strategies": {}}
    while strategies:
        strategy = strategies.pop(0)  # dropped (with its models) before the next one starts
        started = time.perf_counter()
        matrix, steps, train_seconds, trainable = [], [], 0.0, []
        for i, task in enumerate(stream.tasks):
            log.info("%s: learning task %d (%s)", strategy.name, i, task.name)
            summary = strategy.learn(i)
            steps.append(summary["steps"])
            train_seconds += summary["train_seconds"]
            trainable.append(summary["trainable_params"])
            matrix.append([strategy.accuracy(j) for j in range(len(stream.tasks))])
        extra, what = strategy.extra_memory()
        results["strategies"][strategy.name] = {
            "matrix": matrix, **summarize(matrix), "steps_per_task": steps,
            "trainable_params_per_task": trainable, "total_params": summary["total_params"],
            "train_seconds": round(train_seconds, 2), "wall_seconds": round(time.perf_counter() - started, 2),
            "extra_memory_bytes": extra, "extra_memory": what,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            **strategy.diagnostics(),
        }
        write_json(run_dir / "continual.json", results)
    results["report"] = str(write_continual_report(run_dir, results))
    write_json(run_dir / "continual.json", results)
    return results
