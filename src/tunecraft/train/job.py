"""`tunecraft train`: config → data → model + method → training loop → test evaluation → run folder."""

from __future__ import annotations

import json
import platform
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from .. import __version__
from ..config import RunConfig, build_config, dump_config
from ..data.augment import augment_examples
from ..data.long_documents import report_long_texts
from ..errors import ConfigError, TunecraftError
from ..evaluate.baselines import finetune_shots, masked_lm, run_baselines, verbalizer_ids
from ..evaluate.report import write_predictions, write_report
from ..methods import count_parameters, get_method
from ..models import META, prepare_base
from ..tasks import get_task
from .checkpoint import prune_checkpoints, read_weights, write_json_atomically
from .loop import TrainingLoop, planned_steps
from .memory import keep_freed_memory
from .optim import build_optimizer, build_scheduler
from .precision import resolve as resolve_precision
from .sharded import (
    enable_fsdp_on_cpu,
    fsdp_requested,
    load_weights_into,
    prepare_for_sharding,
    refuse_under_fsdp,
    unsharded,
)


def make_accelerator(mixed_precision: str, fsdp: bool = False) -> Accelerator:
    """`fsdp`: the caller gathers sharded weights and optimizer state through train/sharded.py (`train`
    does; the others refuse an FSDP launch rather than write checkpoints or models that hold one shard)."""
    AcceleratorState._reset_state()  # allow several runs (with different precisions) in one process
    acc = Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())
    if fsdp_requested() and not fsdp:
        raise TunecraftError("accelerate FSDP is supported by `tunecraft train` only; use a DDP config such as "
                             "recipes/accelerate/gpu-ddp.yaml or cpu-2proc.yaml")
    enable_fsdp_on_cpu(acc)
    if acc.distributed_type.value == "DEEPSPEED":
        # each process holds only a shard of the weights and optimizer state there, and our checkpoints and export
        # read the process's own tensors: refuse rather than write checkpoints that cannot be resumed or exported
        raise TunecraftError("accelerate DEEPSPEED is not supported by tunecraft's checkpoints and export yet "
                             "(they would hold one process's shard); for sharding use FSDP "
                             "(recipes/accelerate/fsdp.yaml), otherwise a DDP config such as "
                             "recipes/accelerate/gpu-ddp.yaml or cpu-2proc.yaml")
    return acc


# how the work is laid out, not what is learned: a resume may change them (another number of processes
# usually comes with another grad_accum, to keep the global batch)
LAYOUT_KEYS = ("grad_accum", "num_threads", "progress", "tensorboard")


def check_run_dir(config: RunConfig, resume: bool, overwrite: bool) -> None:
    """Refuse early (before any work) to resume what is not there or to replace a run by accident."""
    run_dir, saved = config.run_dir, config.run_dir / "config.yaml"
    if resume:
        if not saved.is_file():
            raise TunecraftError(f"cannot resume: {saved} does not exist")
        # read back through the schema, so that a default it has since normalised (dataset beside train) is no change
        before = yaml.safe_load(dump_config(build_config(yaml.safe_load(saved.read_text(encoding="utf-8")))))
        now = yaml.safe_load(dump_config(config))
        for section in (before, now):
            for key in LAYOUT_KEYS:
                section.get("train", {}).pop(key, None)
        if before != now:
            raise TunecraftError(f"cannot resume {run_dir}: the recipe differs from its config.yaml; "
                                 "resume with the same recipe and overrides (only train."
                                 f"{', train.'.join(LAYOUT_KEYS)} may change)")
    elif run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise TunecraftError(f"{run_dir} already exists: pass --resume to continue it, --overwrite to "
                             "replace it, or name=... for a new run")


def prepare_run_dir(config: RunConfig, resume: bool) -> Path:
    run_dir = config.run_dir
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
    return run_dir


@dataclass
class Job:
    """What a run trains on and with, built from the config; nothing written yet."""

    task: object
    data: object
    base: object
    tokenizer: object
    meta: dict
    train_examples: list
    train_enc: object
    val_enc: object
    test_enc: object
    method: object
    model: torch.nn.Module


def prepare_job(config: RunConfig, model=None, data=None) -> Job:
    """Data → tokenized splits → model + method (shared by `train` and `plan`). Only reads: bad data or a
    bad method config fail here, before any run folder is touched."""
    task = get_task(config.task)
    metric = config.train.early_stopping.metric
    if metric not in task.METRICS:
        raise ConfigError(f"train.early_stopping.metric: unknown metric '{metric}' for {config.task}; "
                          f"choose one of {', '.join(task.METRICS)}")
    if data is None:
        data = task.load_data(config.data)  # bad data fails here, before the run folder is touched
    base = prepare_base(config.model, lambda: task.training_texts(data.train))
    for i, described in enumerate(config.baselines.descriptions or []):
        missing = sorted(set(data.label_map.labels) - set(described))
        if config.task == "classification" and missing:
            raise ConfigError(f"baselines.descriptions[{i}]: no description for {', '.join(missing)}")
    tokenizer = base.tokenizer
    if config.baselines.cloze and config.task == "classification":  # refuse a bad cloze set-up before training
        verbalizer_ids(tokenizer, data.label_map.labels, config.baselines.cloze.verbalizers)
        if base.path is None:
            raise ConfigError("baselines.cloze: needs a pre-trained base model with a masked-LM head")
        masked_lm(base.path)
    lmap = data.label_map
    meta = model_meta(config, task, lmap, data.columns)
    if config.data.augment.copies and config.task != "classification":
        raise ConfigError("data.augment: text augmentation is for classification only")
    train_examples = augment_examples(data.train, config.data.augment, config.seed)  # training split only
    train_enc = task.encode(tokenizer, train_examples, meta, lmap)
    val_enc = task.encode(tokenizer, data.validation, meta, lmap) if data.validation else None
    test_enc = task.encode(tokenizer, data.test, meta, lmap) if data.test else None
    for what, enc in (("training texts", train_enc), ("validation texts", val_enc), ("test texts", test_enc)):
        report_long_texts(enc, what, config.model.max_length)  # once per split, on the terminal

    if model is None:
        model = task.build_model(base, lmap, config.model.dropout)
    method = get_method(config.method.name)
    try:
        model = method.apply(model, config.method, config.task)
    except ValueError as err:
        raise ConfigError(f"method: {err}") from None
    set_gradient_checkpointing(model, config.train.gradient_checkpointing)
    return Job(task, data, base, tokenizer, meta, train_examples, train_enc, val_enc, test_enc, method, model)


def set_gradient_checkpointing(model: torch.nn.Module, on: bool) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them (less memory, about a
    third more compute). Non-reentrant checkpointing needs no input gradients, so it works with frozen
    embeddings (LoRA and the other PEFT methods)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if on:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif getattr(inner, "is_activation_checkpointing", False):
        inner.gradient_checkpointing_disable()


def open_run(config, resume: bool, mixed: str, model, lengths: list[int], fsdp: bool = False):
    """The accelerator, the run folder (with the resolved recipe in config.yaml), the optimizer, the planned
    number of steps and the schedule: what `train` and `pretrain` set up once their inputs are known good."""
    acc = make_accelerator(mixed, fsdp)
    run_dir = prepare_run_dir(config, resume) if acc.is_main_process else config.run_dir
    acc.wait_for_everyone()
    if acc.is_main_process and not resume:
        (run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    optimizer = build_optimizer(model, config.train)
    steps = planned_steps(lengths, config.train, config.seed, acc.num_processes)
    return acc, run_dir, optimizer, steps, build_scheduler(optimizer, config.train, steps)


def train(config: RunConfig, resume: bool = False, overwrite: bool = False, hooks=(), loss_terms=(),
          model=None, data=None) -> dict:
    """Fine-tune and evaluate as the config says; returns the run summary (also in summary.json).
    `hooks(loop)` run after each optimizer step, `loss_terms(model, outputs, batch)` add to the task loss
    (see TrainingLoop), and `model`, when given, is trained instead of a fresh one built from model.base
    (a distillation student, a pruned model); model.base then only names its tokenizer. `data`, when given,
    is the task's loaded data (e.g. a continual-learning replay mix) instead of loading config.data."""
    started = time.time()
    check_run_dir(config, resume, overwrite)
    keep_freed_memory()
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    transformers.set_seed(config.seed)
    mixed, dtype = resolve_precision(config.train.precision)
    job = prepare_job(config, model=model, data=data)
    task, data, base, tokenizer, meta = job.task, job.data, job.base, job.tokenizer, job.meta
    lmap, max_len, method, model = data.label_map, config.model.max_length, job.method, job.model
    train_examples, train_enc, val_enc, test_enc = job.train_examples, job.train_enc, job.val_enc, job.test_enc
    trainable, total = count_parameters(model)
    eval_name, eval_examples, eval_enc = (("test", data.test, test_enc) if test_enc
                                          else ("validation", data.validation, val_enc))
    generative = getattr(task, "GENERATIVE", False) and eval_enc is not None
    gen = config.generation.model_dump()
    if fsdp_requested():
        refuse_under_fsdp(config, generative, extras=[*hooks, *loss_terms, *method.loss_terms(model, task)])

    # everything above only reads; the run folder is touched once the inputs are known to be good
    acc, run_dir, optimizer, steps, scheduler = open_run(config, resume, mixed, model, train_enc.lengths, fsdp=True)
    hooks = [*method.hooks(model, steps), *hooks]
    loss_terms = [*method.loss_terms(model, task), *loss_terms]
    spare = prepare_for_sharding(acc, model)  # under FSDP, process 0's unsharded copy, for the export
    model, optimizer = acc.prepare(model, optimizer)
    loop = TrainingLoop(accelerator=acc, model=model, optimizer=optimizer, scheduler=scheduler, task=task,
                        train_enc=train_enc, eval_enc=val_enc, label_map=lmap, cfg=config.train,
                        seed=config.seed, run_dir=run_dir, pad_id=tokenizer.pad_token_id,
                        autocast_dtype=dtype, hooks=hooks, loss_terms=loss_terms)
    if generative and not resume:  # the base model on the same held-out split and prompts, for before/after
        before = loop.evaluate(eval_enc)  # every process takes part; generation is the main process's alone
        if acc.is_main_process:
            before.update(task.generation_eval(acc.unwrap_model(model), tokenizer, eval_examples, gen, dtype))
            write_json_atomically(run_dir / "before.json", before)
    state = loop.run(resume=resume)

    plain = acc.unwrap_model(model)
    if state.best_step is not None:
        load_weights_into(acc, model, read_weights(run_dir / "checkpoints" / "best"))
    # all processes' work (each counted only its own batches); train_seconds is process 0's wall time
    counts = torch.tensor([state.train_tokens, state.padded_tokens, state.train_examples], device=acc.device)
    tokens, padded, examples = (int(v) for v in (acc.reduce(counts, reduction="sum") if acc.num_processes > 1
                                                 else counts).tolist())
    logits = loop.evaluate_logits(eval_enc) if eval_enc else None
    final = loop.evaluate(eval_enc, logits) if eval_enc else {}
    generations = []
    if generative and acc.is_main_process:
        final.update(task.generation_eval(plain, tokenizer, eval_examples, gen, dtype))
        before = json.loads((run_dir / "before.json").read_text(encoding="utf-8"))
        generations = final.pop("generations", [])
        for row, base_row in zip(generations, before.pop("generations", [])):
            row["before"] = base_row["output"]
        final["before"] = before
        final["samples_shown"] = generations[: gen["report_samples"]]
    baselines = run_baselines(base.path, config, data) if acc.is_main_process else []
    if config.baselines.finetune_shots and config.task == "classification" and acc.num_processes == 1:
        baselines += finetune_shots(config, data, run_dir)
    summary = {
        "name": config.name, "task": config.task, "method": config.method.name, "base_model": config.model.base,
        "data": data.description, "labels": lmap.labels,
        "sizes": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
        **({"entities": data.entity_counts} if getattr(data, "entity_counts", None) else {}),
        "features": {"train": len(train_enc)},
        "truncated": {"train": train_enc.truncated, "max_length": max_len},
        **({"overlong": train_enc.options["overlong"]} if "overlong" in train_enc.options else {}),
        "augmented_train_examples": len(train_examples) - len(data.train),
        "trainable_params": trainable, "total_params": total,
        "steps": state.global_step, "planned_steps": state.total_steps, "epochs_done": state.epoch,
        "stopped_early": state.stopped_early, "best_step": state.best_step,
        "best_validation": {config.train.early_stopping.metric: state.best_metric},
        "eval_split": eval_name, "metrics": final, "baselines": baselines,
        "train_seconds": round(state.train_seconds, 2), "wall_seconds": round(time.time() - started, 2),
        "train_tokens": tokens,
        "tokens_per_second": round(tokens / max(state.train_seconds, 1e-9), 1),
        "examples_per_second": round(examples / max(state.train_seconds, 1e-9), 2),
        "padding_fraction": round(1 - tokens / max(padded, 1), 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "precision": mixed, "device": str(acc.device), "processes": acc.num_processes,
        "distributed": acc.distributed_type.value,
        "versions": {"tunecraft": __version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},
    }
    exported = unsharded(acc, model, spare)  # every process: under FSDP it gathers the full model
    if acc.is_main_process:
        if eval_enc:
            rows = task.prediction_rows(eval_examples, logits, eval_enc, lmap)
            write_predictions(run_dir / "predictions.jsonl", rows)
        if generations:
            write_predictions(run_dir / "generations.jsonl", generations)
        export(method, exported, tokenizer, run_dir, meta)
        write_json_atomically(run_dir / "summary.json", summary)
        summary["report"] = str(write_report(run_dir, summary, loop.state.history, task))
        prune_checkpoints(run_dir / "checkpoints", 1)
    acc.wait_for_everyone()
    return summary


def model_meta(config: RunConfig, task, lmap, columns) -> dict:
    """What eval, predict and serve need to use the model as it was trained (model/tunecraft.json)."""
    return {"task": config.task, "labels": lmap.labels, "max_length": config.model.max_length,
            "text_column": columns.text, "text_pair_column": columns.text_pair, "label_column": columns.label,
            "base_model": config.model.base, "method": config.method.name, "precision": config.train.precision,
            "adapter_required": not get_method(config.method.name).merged, **task.options(config)}


def export(method, model, tokenizer, run_dir: Path, meta: dict) -> None:
    """model/: a plain transformers folder (LoRA merged); adapter/: the peft adapter, for LoRA."""
    final_dir, adapter_dir = run_dir / "model", run_dir / "adapter"
    tmp = run_dir / ".model-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp_adapter = run_dir / ".adapter-tmp"
    shutil.rmtree(tmp_adapter, ignore_errors=True)
    method.export(model, tmp, tmp_adapter)
    tokenizer.model_max_length = meta["max_length"]  # plain transformers then cuts where training did
    for folder in (tmp, tmp_adapter):
        if folder.exists():
            tokenizer.save_pretrained(folder)
            (folder / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    for folder, target in ((tmp, final_dir), (tmp_adapter, adapter_dir)):
        if folder.exists():
            shutil.rmtree(target, ignore_errors=True)
            folder.rename(target)
