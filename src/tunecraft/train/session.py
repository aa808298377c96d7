"""The run session: one training run's life, the same for every command that trains.

    open   (reads only)       refuse a run folder that would be lost or cannot be resumed; threads, seed, precision
    start  (inputs known good) accelerator, run folder with the resolved config.yaml, optimizer, schedule
    fit                        the training loop (train/loop.py) with its step plug-ins
    close                      best weights back in the model; summary.json, the exported model folders and the
                               report, each written atomically; checkpoints pruned to the last one

`tunecraft train` and `tunecraft pretrain` are written on it; continual learning, compression (distillation,
pruning recovery) and tuning train through `tunecraft.train`, so through it too; `tunecraft plan` opens one to
measure steps with the same threads, seed and precision.
"""

from __future__ import annotations

import platform
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from ..config import dump_config
from ..cpus import default_threads
from ..errors import TunecraftError
from ..io import refuse_existing, replace_folder, temporary_folder, write_json, write_text
from ..runs import META, RunFolder
from ..runtime.precision import resolve as resolve_precision
from ..version import __version__
from . import trackers
from .checkpoint import prune_checkpoints, read_weights
from .loop import TrainingLoop, planned_steps
from .memory import keep_freed_memory
from .optim import build_optimizer, build_scheduler
from .sharded import enable_fsdp_on_cpu, fsdp_requested, load_weights_into

# how the work is laid out, not what is learned: a resume may change them (another number of processes
# usually comes with another grad_accum, to keep the global batch)
LAYOUT_KEYS = ("grad_accum", "num_threads", "progress", "tensorboard", "trackers")


def make_accelerator(mixed_precision: str, fsdp: bool = False, log_with: list[str] | None = None) -> Accelerator:
    """`fsdp`: the caller gathers sharded weights and optimizer state through train/sharded.py (`train`
    does; the others refuse an FSDP launch rather than write checkpoints or models that hold one shard).
    `log_with`: accelerate's trackers (train/trackers.py)."""
    AcceleratorState._reset_state()  # allow several runs (with different precisions) in one process
    acc = Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(), log_with=log_with or None)
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


def check_run_dir(config, resume: bool, overwrite: bool) -> None:
    """Refuse early (before any work) to resume what is not there or to replace a run by accident."""
    run_dir, saved = config.run_dir, RunFolder(config.run_dir).config_file
    if resume:
        if not saved.is_file():
            raise TunecraftError(f"cannot resume: {saved} does not exist")
        before = yaml.safe_load(saved.read_text(encoding="utf-8"))
        try:  # read back through the schema, so that a default it has since normalised is no change
            before = yaml.safe_load(dump_config(type(config).model_validate(before)))
        except ValueError:
            pass  # compared as written: a key the schema no longer takes is a difference
        now = yaml.safe_load(dump_config(config))
        for section in (before, now):
            for key in LAYOUT_KEYS:
                section.get("train", {}).pop(key, None)
        if before != now:
            raise TunecraftError(f"cannot resume {run_dir}: the recipe differs from its config.yaml; "
                                 "resume with the same recipe and overrides (only train."
                                 f"{', train.'.join(LAYOUT_KEYS)} may change)")
    else:
        refuse_existing(run_dir, overwrite, "--resume to continue it, or name=... for a new run")


def prepare_process(config) -> tuple[str, torch.dtype | None]:
    """What every run sets before it builds anything: malloc's thresholds, torch's threads, the seed; returns
    the precision (accelerate's mixed_precision value, the autocast dtype)."""
    keep_freed_memory()
    torch.set_num_threads(config.train.num_threads or default_threads())
    transformers.set_seed(config.seed)
    return resolve_precision(config.train.precision)


class RunSession:
    """`config`: a recipe with `name`, `output_dir` (→ `run_dir`), `seed` and a `train` section."""

    def __init__(self, config, resume: bool = False, overwrite: bool = False):
        self.config, self.resume, self.started = config, resume, time.time()
        check_run_dir(config, resume, overwrite)
        trackers.check(config.train.trackers)
        self.mixed, self.dtype = prepare_process(config)
        self.run_dir: Path = config.run_dir
        self.folder = RunFolder(self.run_dir)
        self.acc: Accelerator | None = None

    # -- start: the first writes ------------------------------------------------------------------------
    def start(self, model: torch.nn.Module, lengths: list[int], fsdp: bool = False) -> int:
        """The accelerator, the run folder with config.yaml, the optimizer and the schedule; returns the
        planned number of optimizer steps."""
        cfg = self.config.train
        self.acc = acc = make_accelerator(self.mixed, fsdp, trackers.log_with(cfg.trackers))
        if acc.is_main_process and not self.resume:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir.mkdir(parents=True)
            write_text(self.folder.config_file, dump_config(self.config))
        acc.wait_for_everyone()
        trackers.start(acc, self.config, self.run_dir)
        self.optimizer = build_optimizer(model, cfg)
        self.steps = planned_steps(lengths, cfg, self.config.seed, acc.num_processes)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps)
        return self.steps

    def loop(self, model, objective, train_enc, eval_enc, label_map, pad_id: int, plugins=(),
             loop_class=TrainingLoop, **extra) -> TrainingLoop:
        """The training loop over the accelerator-prepared model and optimizer."""
        model, self.optimizer = self.acc.prepare(model, self.optimizer)
        return loop_class(self, model, objective, train_enc, eval_enc, label_map, pad_id, plugins, **extra)

    # -- close --------------------------------------------------------------------------------------------
    def restore_best(self, loop: TrainingLoop) -> None:
        """The best validation checkpoint's weights back into the model (every process takes part)."""
        if loop.state.best_step is not None:
            load_weights_into(self.acc, loop.model, read_weights(self.folder.checkpoints / "best"))

    def run_summary(self, loop: TrainingLoop) -> dict:
        """What every run reports about its training: steps, time, throughput (all processes' tokens, or what
        else the objective's UNIT counts: `train_<unit>`, `<unit>_per_second`, named in "unit"), memory,
        precision, device, versions."""
        s, acc = loop.state, self.acc
        counts = torch.tensor([s.train_tokens, s.padded_tokens, s.train_examples], device=acc.device)
        if acc.num_processes > 1:
            counts = acc.reduce(counts, reduction="sum")
        tokens, padded, examples = (int(v) for v in counts.tolist())
        seconds, unit = max(s.train_seconds, 1e-9), loop.task.UNIT
        return {
            "steps": s.global_step, "planned_steps": s.total_steps, "epochs_done": s.epoch,
            "stopped_early": s.stopped_early, "best_step": s.best_step,
            "best_validation": {self.config.train.early_stopping.metric: s.best_metric},
            "train_seconds": round(s.train_seconds, 2), "wall_seconds": round(time.time() - self.started, 2),
            "unit": unit, f"train_{unit}": tokens, f"{unit}_per_second": round(tokens / seconds, 1),
            "examples_per_second": round(examples / seconds, 2),
            "padding_fraction": round(1 - tokens / max(padded, 1), 4),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "precision": self.mixed, "device": str(acc.device), "processes": acc.num_processes,
            "distributed": acc.distributed_type.value, "threads": torch.get_num_threads(),
            "versions": {"tunecraft": __version__, "torch": torch.__version__,
                         "transformers": transformers.__version__, "python": platform.python_version()},
        }

    def close(self, summary: dict, export: Callable[[dict[str, Path]], None], folders: tuple[str, ...],
              report: Callable[[dict], Path], processor=None, meta: dict | None = None) -> dict:
        """On process 0: the model folders (`export(tmp_folders)` fills temporary siblings of run_dir/<name>
        for each name in `folders`; a folder left empty is not exported; the processor (the tokenizer, for text;
        see models.load_processor) and tunecraft.json go in each), summary.json, the report; then the
        checkpoints but the last are removed."""
        if self.acc.is_main_process:
            tmps = {name: temporary_folder(self.run_dir / name) for name in folders}
            try:
                export(tmps)
                for name, tmp in tmps.items():
                    if not any(tmp.iterdir()):
                        continue
                    save_processor(processor, tmp, meta)
                    if meta is not None:
                        write_json(tmp / META, meta, ensure_ascii=False)
                    replace_folder(tmp, self.run_dir / name)
            finally:
                for tmp in tmps.values():
                    shutil.rmtree(tmp, ignore_errors=True)
            write_json(self.folder.summary_file, summary)
            summary["report"] = str(report(summary))
            prune_checkpoints(self.folder.checkpoints, 1)
        self.acc.wait_for_everyone()
        return summary


def save_processor(processor, folder: Path, meta: dict | None) -> None:
    """The processor's own `save_pretrained` into a model folder (nothing where there is none); a tokenizer's
    model_max_length set to meta's max_length first, so plain transformers cuts where training did."""
    if processor is None:
        return
    from ..models import tokenizer_of

    tokenizer = tokenizer_of(processor)
    if tokenizer is not None and meta and "max_length" in meta:
        tokenizer.model_max_length = meta["max_length"]
    processor.save_pretrained(folder)
