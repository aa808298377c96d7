"""`tunecraft.train`: config → data → model + method → the training loop → held-out evaluation → run folder.

It fits, evaluates and exports, nothing else: the baselines and the base model's before/after comparison run
in the layer above (tunecraft/experiment.py), and the run's life (folder, seed, precision, summary, export,
report) is the run session's (train/session.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import RunConfig
from ..data.augment import augment_examples
from ..data.dataset import examples_fingerprint
from ..errors import ConfigError
from ..evaluate.doctor import data_findings, log_findings, refresh
from ..evaluate.report import write_report
from ..io import write_jsonl
from ..methods import count_parameters, get_method
from ..models import prepare_base
from ..runs import ADAPTER, MODEL
from ..tasks import Task, build_task
from ..trained import predict_with_run
from .session import RunSession
from .sharded import fsdp_requested, prepare_for_sharding, refuse_under_fsdp, unsharded


@dataclass
class Job:
    """What a run trains on and with, built from the config; nothing written yet."""

    task: Task
    data: object
    base: object
    """models.Base: the weights and the processor (the tokenizer, for text) the features are made with."""
    meta: dict
    train_examples: list
    train_enc: object
    val_enc: object
    test_enc: object
    method: object
    model: torch.nn.Module | None
    findings: list = field(default_factory=list)
    """The doctor's fast checks on the data and the base model (evaluate/doctor.py)."""

    @property
    def tokenizer(self):
        return self.base.tokenizer

    def held_out(self) -> tuple[str, list, object]:
        """The split the run is scored on: test, or validation when there is no test split."""
        if self.test_enc:
            return "test", self.data.test, self.test_enc
        return "validation", self.data.validation, self.val_enc


def read_job(config: RunConfig, data=None) -> Job:
    """Data → tokenized splits, and the doctor's fast checks on them (on the terminal); no model yet (what
    `tunecraft doctor RECIPE` reads). Only reads: bad data fails here, before any run folder is touched."""
    task = build_task(config.task).hand_runs(predict_with_run)
    task.check_config(config)
    if data is None:
        data = task.load_data(config.data)  # bad data fails here, before the run folder is touched
    base = prepare_base(config.model, lambda: task.training_texts(data.train))
    processor, lmap = base.processor, data.label_map  # a text task's processor is its tokenizer
    meta = model_meta(config, task, lmap, data.columns)
    train_examples = augment_examples(data.train, config.data.augment, config.seed)  # training split only
    train_enc = task.encode(processor, train_examples, meta, lmap)
    val_enc = task.encode(processor, data.validation, meta, lmap) if data.validation else None
    test_enc = task.encode(processor, data.test, meta, lmap) if data.test else None
    job = Job(task, data, base, meta, train_examples, train_enc, val_enc, test_enc, None, None)
    splits = {"train": data.train, "validation": data.validation, "test": data.test}
    job.findings = data_findings(task.NAME, splits, base.tokenizer,
                                 {"train": train_enc, "validation": val_enc, "test": test_enc},
                                 config.model.max_length)
    log_findings(job.findings)  # truncation among them: once per split, on the terminal
    return job


def prepare_job(config: RunConfig, model=None, data=None) -> Job:
    """Data → tokenized splits → model + method (shared by `train` and `plan`). Only reads: bad data or a
    bad method config fail here, before any run folder is touched."""
    job = read_job(config, data)
    task, lmap = job.task, job.data.label_map
    task.fit_training_data(config, lmap, job.train_enc)  # class weights: a bad label in the recipe fails here
    if model is None:
        model = task.build_model(job.base, lmap, config.model.dropout)
    method = get_method(config.method.name)
    try:
        model = method.apply(model, config.method, task)
    except ValueError as err:
        raise ConfigError(f"method: {err}") from None
    set_gradient_checkpointing(model, config.train.gradient_checkpointing)
    job.method, job.model = method, model
    return job


def set_gradient_checkpointing(model: torch.nn.Module, on: bool) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them (less memory, about a
    third more compute). Non-reentrant checkpointing needs no input gradients, so it works with frozen
    embeddings (LoRA and the other PEFT methods)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if on:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif getattr(inner, "is_activation_checkpointing", False):
        inner.gradient_checkpointing_disable()


def train(config: RunConfig, resume: bool = False, overwrite: bool = False, plugins=(), model=None,
          data=None, compare=None) -> dict:
    """Fine-tune and evaluate as the config says; returns the run summary (also in summary.json). `plugins`
    (tunecraft/plugins.py) reach into each step; `model`, when given, is trained instead of a fresh one built from
    model.base (a distillation student, a pruned model), which then only names its tokenizer; `data`, when
    given, is the task's loaded data (e.g. a continual-learning replay mix) instead of loading config.data;
    `compare(summary)`, when given, adds the comparisons (experiment.py) on process 0 after the held-out
    evaluation, so that close writes summary.json and the report once, with them."""
    session = RunSession(config, resume, overwrite)  # refuses a run folder it would lose; seed, threads, precision
    job = prepare_job(config, model=model, data=data)
    task, method, model, tokenizer = job.task, job.method, job.model, job.tokenizer
    eval_name, eval_examples, eval_enc = job.held_out()
    trainable, total = count_parameters(model)
    if fsdp_requested():
        refuse_under_fsdp(config, task.GENERATIVE and eval_enc is not None, extras=list(plugins))

    steps = session.start(model, job.train_enc.lengths, fsdp=True)  # the first write
    plugins = [*method.plugins(model, task, steps), *plugins]
    spare = prepare_for_sharding(session.acc, model)  # under FSDP, process 0's unsharded copy, for the export
    loop = session.loop(model, task, job.train_enc, job.val_enc, job.data.label_map, job.base.pad_id, plugins)
    task.before_training(session.acc.unwrap_model(loop.model),
                         {"train": job.train_enc, "validation": job.val_enc, "test": job.test_enc}, session)
    loop.run(resume=resume)
    session.restore_best(loop)

    scores = loop.evaluate_logits(eval_enc) if eval_enc else None
    metrics = loop.evaluate(eval_enc, scores) if eval_enc else {}
    generations = []
    if eval_enc and session.acc.is_main_process:  # generating is the main process's alone
        plain = session.acc.unwrap_model(loop.model)
        gen = job.meta.get("generation") or {}
        metrics.update(task.generation_eval(plain, tokenizer, eval_examples, gen, session.dtype))
        generations = metrics.pop("generations", [])
        if generations:
            metrics["samples_shown"] = generations[: gen["report_samples"]]
    summary = {**data_summary(config, job, trainable, total), "eval_split": eval_name, "metrics": metrics,
               "eval_fingerprint": examples_fingerprint(eval_examples) if eval_enc else None,
               "baselines": [], **session.run_summary(loop), "doctor": [f.as_dict() for f in job.findings]}
    exported = unsharded(session.acc, loop.model, spare)  # every process: under FSDP it gathers the full model
    if session.acc.is_main_process:
        if eval_enc:
            write_jsonl(session.folder.predictions_file,
                        task.prediction_rows(eval_examples, scores, eval_enc, job.data.label_map))
        if generations:
            write_jsonl(session.folder.generations_file, generations)
        if compare is not None:
            compare(summary)
        log_findings([f for f in refresh(summary, session.run_dir, task.NAME, task.HEADLINE)
                      if f["stage"] == "outcome"])  # the run's outcome (a result below a baseline among them)
    return session.close(summary, lambda tmp: method.export(exported, tmp[MODEL], tmp[ADAPTER]),
                         (MODEL, ADAPTER), lambda s: write_report(session.run_dir, s, loop.state.history, task),
                         job.base.processor, job.meta)


def data_summary(config: RunConfig, job: Job, trainable: int, total: int) -> dict:
    """The summary's part about what was trained: task, method, base, data and its sizes, parameters."""
    data, train_enc = job.data, job.train_enc
    return {
        "name": config.name, "task": config.task.name, "method": config.method.name, "base_model": config.model.base,
        "data": data.description, "labels": data.label_map.labels,
        "sizes": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
        **data.summary,
        "features": {"train": len(train_enc)},
        "truncated": {"train": train_enc.truncated, "max_length": config.model.max_length},
        **({"overlong": train_enc.options["overlong"]} if "overlong" in train_enc.options else {}),
        "augmented_train_examples": len(job.train_examples) - len(data.train),
        "trainable_params": trainable, "total_params": total,
    }


def model_meta(config: RunConfig, task: Task, lmap, columns) -> dict:
    """What eval, predict and serve need to use the model as it was trained (model/tunecraft.json)."""
    return {"task": config.task.name, "labels": lmap.labels, "max_length": config.model.max_length,
            "text_column": columns.text, "text_pair_column": columns.text_pair, "label_column": columns.label,
            "base_model": config.model.base, "method": config.method.name, "precision": config.train.precision,
            "adapter_required": not get_method(config.method.name).merged, "columns": dict(config.data.columns),
            **task.options(config),
            "task_settings": task.settings.model_dump(mode="json")}
