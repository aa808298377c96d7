"""THE training loop: forward → loss → backward → clip → step → plug-ins → log → eval/early-stop → checkpoint.

Written out by hand (not a Trainer subclass) so that step plug-ins (tunecraft/plugins.py) reach into the step:
extra loss terms (distillation, regularisers, EWC), extra passes after backward (adversarial training), work
after each optimizer step with the gradients still in place (pruning masks, AdaLoRA budgets); the objective
(a task or a pre-training objective, tasks/base.py) gives the batches, the loss and the held-out scores;
accelerate does devices, precision, processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import torch
from accelerate.utils import send_to_device
from tqdm.auto import tqdm

from ..data.dataset import Encoded, batch_order, pad_multiple
from ..errors import TrainingFailed
from ..io import write_text
from ..metrics.labels import headline
from ..runs import RunFolder
from ..runtime.inference import autocast_context
from ..runtime.precision import frozen_linears_cast
from .checkpoint import latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint, save_weights
from .dropout import masked_dropout
from .regularizers import config_plugins
from .sharded import is_sharded, load_optimizer_state, load_weights_into, optimizer_state, trainable_weights

logger = logging.getLogger(__name__)


def balanced_draw(labels: list[int], seed: int, epoch: int) -> list[int]:
    """`len(labels)` example indices drawn with replacement, each with weight 1 / its label's count, from a
    generator seeded by (seed, epoch): every label equally often in expectation, and resume exact (train.sampler:
    balanced). torch's WeightedRandomSampler draws from the global RNG, which resume would not reproduce here."""
    counts = Counter(labels)
    weights = torch.tensor([1.0 / counts[y] for y in labels], dtype=torch.double)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.multinomial(weights, len(labels), replacement=True, generator=generator).tolist()


def epoch_windows(lengths: list[int], cfg, seed: int, epoch: int, rank: int = 0, world: int = 1,
                  labels: list[int] | None = None) -> list[list[list[int]]]:
    """One process's micro-batches for an epoch, grouped into accumulation windows (one step each); with
    `cfg.sampler` balanced, over the epoch's balanced draw of the examples (`labels` needed)."""
    # without labels (planned_steps): the same number of batches, so the count needs no draw
    drawn = balanced_draw(labels, seed, epoch) if cfg.sampler == "balanced" and labels is not None else None
    if drawn is not None:
        lengths = [lengths[i] for i in drawn]
    batches = batch_order(lengths, cfg.batch_size, seed, epoch, group_by_length=cfg.group_by_length)
    if drawn is not None:
        batches = [[drawn[i] for i in batch] for batch in batches]
    usable = len(batches) // world * world or len(batches)
    mine = batches[rank:usable:world]
    return [mine[i : i + cfg.grad_accum] for i in range(0, len(mine), cfg.grad_accum)]


def planned_steps(lengths: list[int], cfg, seed: int, world: int = 1) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * len(epoch_windows(lengths, cfg, seed, 0, 0, world))))


@dataclass
class LoopState:
    """Everything besides weights/optimizer/RNG that an exact resume needs."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    total_steps: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    log_loss_sum: float = 0.0
    log_count: int = 0
    log_terms: dict = field(default_factory=dict)
    """The objective's step terms since the last log line (Objective.step_terms): name → [sum, count]."""
    train_tokens: int = 0
    """What the steps trained on, in the objective's UNIT (tokens for text; the name is kept for old checkpoints)."""
    padded_tokens: int = 0
    train_examples: int = 0
    train_seconds: float = 0.0
    world_size: int = 1
    """Processes (and, below, accumulation steps) when this state was saved: a resume on another number
    of processes maps the position in the epoch through them (see TrainingLoop.resize)."""
    grad_accum: int = 1
    history: list = field(default_factory=list)


class TrainingLoop:
    """`session` (train/session.py) brings the accelerator, the optimizer and schedule, the run folder, the
    train config, the seed and the autocast dtype; `plugins` reach into each step, followed by those the
    train config turns on (label smoothing, R-Drop, FGM/PGD)."""

    def __init__(self, session, model, objective, train_enc: Encoded, eval_enc: Encoded | None, label_map,
                 pad_id: int, plugins=()):
        self.acc, self.model = session.acc, model
        self.optimizer, self.scheduler = session.optimizer, session.scheduler
        self.cfg, self.seed, self.run_dir = session.config.train, session.config.seed, session.run_dir
        self.autocast_dtype = session.dtype
        self.task, self.train_enc, self.eval_enc, self.label_map = objective, train_enc, eval_enc, label_map
        self.pad_id = pad_id
        self.plugins = [*plugins, *config_plugins(self.cfg, model)]
        self.folder = RunFolder(self.run_dir)
        self.ckpt_dir = self.folder.checkpoints
        world = self.acc.num_processes
        self.state = LoopState(total_steps=planned_steps(train_enc.lengths, self.cfg, self.seed, world),
                               world_size=world, grad_accum=self.cfg.grad_accum)
        self.writer = None
        self._windows: tuple[int | None, list] = (None, [])

    # -- schedule ---------------------------------------------------------------------------------
    def epoch_windows(self, epoch: int) -> list[list[list[int]]]:
        if self._windows[0] != epoch:
            self._windows = (epoch, epoch_windows(self.train_enc.lengths, self.cfg, self.seed, epoch,
                                                  self.acc.process_index, self.acc.num_processes,
                                                  getattr(self.train_enc, "labels", None)))
        return self._windows[1]

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> LoopState:
        # sharded parameters (FSDP) are not plain tensors to swap, nor its wrapped modules to replace
        sharded = is_sharded(self.acc)
        model = self.acc.unwrap_model(self.model)
        with (frozen_linears_cast(model, None if sharded else self.autocast_dtype),
              masked_dropout(model, self.acc.device.type == "cpu" and not sharded)):
            return self._run(resume)

    def _run(self, resume: bool) -> LoopState:
        if resume:
            self.restore()
        s = self.state
        if self.acc.is_main_process and self.cfg.tensorboard and "tensorboard" in self.cfg.trackers:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=s.global_step + 1)
        bar = tqdm(total=s.total_steps, initial=s.global_step, desc="train", dynamic_ncols=True, mininterval=1.0,
                   disable=not (self.cfg.progress and self.acc.is_main_process))
        while s.global_step < s.total_steps and not s.stopped_early:
            windows = self.epoch_windows(s.epoch)
            while s.step_in_epoch < len(windows) and s.global_step < s.total_steps:
                stats = self.train_step(windows[s.step_in_epoch])
                s.step_in_epoch += 1
                s.global_step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", refresh=False)
                for plugin in self.plugins:
                    plugin.after_step(self)
                self.after_step(stats, epoch_end=s.step_in_epoch == len(windows))
                if s.stopped_early:
                    break
            if s.step_in_epoch >= len(windows):
                s.epoch += 1
                s.step_in_epoch = 0
        bar.close()
        if self.writer:
            self.writer.close()
        for tracker in self.acc.trackers:  # MLflow, W&B: the run marked finished (not end_training(), which
            tracker.finish()               # would also end the process group the close still needs)
        return s

    def train_step(self, window: list[list[int]]) -> dict:
        """One optimizer step over an accumulation window. The loss is the sum over every example of the
        window divided by their global count, so 4 × 8 and 1 × 32 make the same update."""
        self.model.train()
        start = time.perf_counter()
        # gradients are cleared here, not after the step, so that step hooks (AdaLoRA's importance scores)
        # can still read them
        self.optimizer.zero_grad(set_to_none=True)
        multiple = pad_multiple(self.acc.device)
        batches = [self.task.collate(self.train_enc, idx, self.pad_id, multiple) for idx in window]
        # before counting: an online objective's batch (RL rollouts) is only known once sampled from the model
        plain = self.acc.unwrap_model(self.model)
        with autocast_context(self.acc.device, self.autocast_dtype):  # the frozen weights may be cast (run())
            batches = [self.task.prepare(plain, b) for b in batches]
        local = sum(self.task.count(b) for b in batches)
        world = self.acc.num_processes
        total = local
        if world > 1:
            total = int(self.acc.reduce(torch.tensor(local, device=self.acc.device), reduction="sum").item())
        loss_value = 0.0
        for j, batch in enumerate(batches):
            batch = send_to_device(batch, self.acc.device)  # nested too: prepare's "labels" may be a dict
            last = j == len(batches) - 1
            sync = contextlib.nullcontext() if last else self.acc.no_sync(self.model)
            with sync:
                outputs = self.model(**self.task.model_inputs(batch))
                summed = self.task.loss_sum(outputs, batch)
                self.add_step_terms(outputs, batch)
                for plugin in self.plugins:
                    term = plugin.loss(self.model, outputs, batch, self.task)
                    if term is not None:
                        summed = summed + term
                self.acc.backward(summed * world / total)
                for plugin in self.plugins:
                    plugin.after_backward(self.model, batch, self.task,
                                          lambda loss: self.acc.backward(loss * world / total))
            loss_value += summed.item()
            real, padded = self.task.units(batch)  # tokens for text; what the objective counts (images) else
            self.state.train_tokens += real
            self.state.padded_tokens += padded
        if world > 1:  # the logged loss is the global batch's, as with one process
            loss_value = float(self.acc.reduce(torch.tensor(loss_value, device=self.acc.device), reduction="sum"))
        if not math.isfinite(loss_value):  # every process sees the same global value: all stop here
            self.fail(loss_value)
        grad_norm = None
        if self.cfg.max_grad_norm:
            grad_norm = float(self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.state.train_seconds += time.perf_counter() - start
        self.state.train_examples += sum(len(idx) for idx in window)  # sequences (windows, for NER)
        self.state.log_loss_sum += loss_value
        self.state.log_count += total
        return {"loss": loss_value / max(total, 1), "grad_norm": grad_norm}

    def add_step_terms(self, outputs, batch: dict) -> None:
        """This process's step terms (not reduced across processes: the log shows process 0's share)."""
        for name, (total, n) in self.task.step_terms(outputs, batch).items():
            kept = self.state.log_terms.setdefault(name, [0.0, 0])
            kept[0], kept[1] = kept[0] + total, kept[1] + n

    def after_step(self, stats: dict, epoch_end: bool) -> None:
        s, cfg = self.state, self.cfg
        if s.global_step % cfg.log_every == 0 or s.global_step == s.total_steps:
            per_epoch = max(len(self.epoch_windows(s.epoch)), 1)
            record = {"type": "train", "step": s.global_step,
                      "epoch": round(s.epoch + s.step_in_epoch / per_epoch, 4),
                      "loss": s.log_loss_sum / max(s.log_count, 1), "lr": self.scheduler.get_last_lr()[0],
                      "grad_norm": stats["grad_norm"],
                      f"{self.task.UNIT}_per_s": s.train_tokens / max(s.train_seconds, 1e-9),
                      **{name: total / max(n, 1) for name, (total, n) in s.log_terms.items()}}
            s.log_loss_sum, s.log_count, s.log_terms = 0.0, 0, {}
            self.log(record)
        due = (cfg.eval_every and s.global_step % cfg.eval_every == 0) or (epoch_end and cfg.eval_each_epoch)
        last = s.global_step == s.total_steps
        evaluated = False
        if self.eval_enc is not None and len(self.eval_enc) and (due or last):
            self.evaluate_and_select()
            evaluated = True
        if (cfg.checkpoint_every and s.global_step % cfg.checkpoint_every == 0) or evaluated:
            if not last and not s.stopped_early:
                self.checkpoint()

    def fail(self, loss_value: float) -> None:
        """A NaN/inf loss: the run ends as failed before its optimizer step (nothing exported, no summary),
        the step in metrics.jsonl."""
        step = self.state.global_step + 1
        self.log({"type": "failed", "step": step, "loss": str(loss_value)})
        raise TrainingFailed(f"{self.run_dir}: the training loss is {loss_value} at step {step} (diverged); the "
                             f"run failed and exported nothing: lower train.lr (now {self.cfg.lr:g}) or "
                             "train.max_grad_norm, then train again with --overwrite")

    # -- evaluation, early stopping, best model -----------------------------------------------------
    def evaluate_logits(self, enc: Encoded) -> torch.Tensor:
        # the plain module, not the DDP wrapper: DDP's forward broadcasts buffers (BERT's position ids) from
        # process 0, a collective that hangs when processes run different numbers of eval batches
        model = self.acc.unwrap_model(self.model)
        # under FSDP each forward all-gathers the parameters, a collective: every process runs every batch
        rank, world = (0, 1) if is_sharded(self.acc) else (self.acc.process_index, self.acc.num_processes)
        return self.task.infer(model, enc, self.cfg.batch_size * 2, self.pad_id, self.acc.device,
                               self.autocast_dtype, rank, world, _gather_object)

    def evaluate(self, enc: Encoded, logits=None) -> dict:
        logits = self.evaluate_logits(enc) if logits is None else logits
        return self.task.evaluate(logits, enc, self.label_map)

    def evaluate_and_select(self) -> None:
        s, es = self.state, self.cfg.early_stopping
        result = headline(self.evaluate(self.eval_enc))
        if es.metric not in result:
            raise ValueError(f"train.early_stopping.metric '{es.metric}' is not one of {sorted(result)}")
        self.log({"type": "eval", "split": "validation", "step": s.global_step, **result})
        keys = [k for k in dict.fromkeys((*self.task.HEADLINE, es.metric)) if k in result]
        line = f"step {s.global_step}: validation " + "  ".join(f"{k} {result[k]:.4f}" for k in keys)
        if self.cfg.progress and self.acc.is_main_process:
            tqdm.write(line)  # above the progress bar, which stays in place
        logger.info(line)
        value = result[es.metric]
        better = s.best_metric is None or (value > s.best_metric if es.mode == "max" else value < s.best_metric)
        if better:
            s.best_metric, s.best_step, s.bad_evals = value, s.global_step, 0
            weights = trainable_weights(self.acc, self.model)  # every process: under FSDP it gathers
            if self.acc.is_main_process:
                save_weights(self.ckpt_dir / "best", weights)
        else:
            s.bad_evals += 1
            if es.patience and s.bad_evals >= es.patience:
                s.stopped_early = True
                self.log({"type": "early_stop", "step": s.global_step, "best_step": s.best_step,
                          f"best_{es.metric}": s.best_metric})
        self.acc.wait_for_everyone()

    # -- logging and checkpoints --------------------------------------------------------------------
    def log(self, record: dict) -> None:
        self.state.history.append(record)
        if not self.acc.is_main_process:
            return
        with open(self.folder.metrics_file, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        scalars = {f"{record['type']}/{key}": value for key, value in record.items()
                   if isinstance(value, int | float) and key not in ("step", "type")}
        if self.writer:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, record["step"])
        if self.acc.trackers:
            self.acc.log(scalars, step=record["step"])

    def checkpoint(self) -> None:
        # every process: under FSDP these gather the shards (process 0 gets the full tensors)
        weights = trainable_weights(self.acc, self.model)
        optim = optimizer_state(self.acc, self.model, self.optimizer)
        if self.acc.is_main_process:
            target = self.ckpt_dir / f"step-{self.state.global_step}"
            save_checkpoint(target, weights, optim, self.scheduler, asdict(self.state))
            prune_checkpoints(self.ckpt_dir, self.cfg.keep_checkpoints)
        self.acc.wait_for_everyone()

    def restore(self) -> None:
        if self.acc.is_main_process:  # and the half-written folders of a write that was killed
            prune_checkpoints(self.ckpt_dir, self.cfg.keep_checkpoints)
        self.acc.wait_for_everyone()
        found = latest_checkpoint(self.ckpt_dir)
        if found is None:  # killed before its first checkpoint was complete: nothing to lose by starting over
            logger.warning("no complete checkpoint in %s (the run stopped before writing its first one): "
                           "starting again from step 0", self.ckpt_dir)
            if self.acc.is_main_process:
                shutil.rmtree(self.ckpt_dir / "best", ignore_errors=True)
        else:
            weights, optim, saved = load_checkpoint(found, self.scheduler)
            load_weights_into(self.acc, self.model, weights)
            load_optimizer_state(self.acc, self.model, self.optimizer, optim)
            self.state = LoopState(**saved)
            self.resize(self.acc.num_processes, self.cfg.grad_accum)
        # metrics logged after that checkpoint belong to the lost part of the run: drop them
        path = self.folder.metrics_file
        if self.acc.is_main_process and path.exists():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if line and json.loads(line)["step"] <= self.state.global_step]
            write_text(path, "".join(line + "\n" for line in kept))


    def resize(self, world: int, grad_accum: int) -> None:
        """Carry a restored position over to another number of processes or accumulation steps. Optimizer
        step k of an epoch covers the epoch's micro-batches [k·A·W, (k+1)·A·W) in batch_order (each process
        takes every W-th, see epoch_windows), so the micro-batches already done, k·A·W, are where the new
        layout starts; global_step keeps counting optimizer steps done. When they do not divide evenly the
        new layout rounds up (skips fewer than A'·W' micro-batches) and says so."""
        s = self.state
        if (s.world_size, s.grad_accum) == (world, grad_accum):
            return
        done = s.step_in_epoch * s.grad_accum * s.world_size
        per_step = grad_accum * world
        s.step_in_epoch = -(-done // per_step)
        if done % per_step:
            logger.warning("resume on %d processes × %d accumulation steps: %d micro-batches of epoch %d are "
                           "skipped to start on a step boundary", world, grad_accum,
                           s.step_in_epoch * per_step - done, s.epoch)
        if not self.cfg.max_steps:  # the rest of the epochs, counted in the new layout's steps
            per_epoch = len(self.epoch_windows(s.epoch))
            rest = max(0.0, self.cfg.epochs - s.epoch) * per_epoch - s.step_in_epoch
            s.total_steps = s.global_step + max(0, math.ceil(rest))
        logger.info("resumed a %d-process checkpoint at step %d on %d processes", s.world_size, s.global_step, world)
        s.world_size, s.grad_accum = world, grad_accum


def _gather_object(rows):
    from accelerate.utils import gather_object

    return gather_object(rows)
