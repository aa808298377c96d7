"""`tunecraft plan`: a few real training steps → memory split, tokens/s and time estimates; `--auto` picks
micro-batch size, accumulation, precision and gradient checkpointing to fit a memory budget."""

from __future__ import annotations

import copy
import os
import re
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass

import torch
from accelerate.utils import extract_model_from_parallel

from ..config import RunConfig
from ..errors import ConfigError
from ..methods import count_parameters
from ..runtime.precision import cpu_has_bf16, frozen_linears_cast
from ..runtime.precision import resolve as resolve_precision
from .dropout import masked_dropout
from .job import prepare_job, set_gradient_checkpointing
from .loop import epoch_windows, planned_steps
from .session import RunSession, prepare_process
from .sharded import is_sharded

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """'4GB' → 4e9, '512MiB' → 2**29, '1.5g' → 1.5e9."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ConfigError(f"memory size '{text}': expected a number and a unit, e.g. 4GB, 512MB, 8GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def mb(n: float) -> float:
    return round(n / 1e6, 1)


@dataclass
class Measurement:
    """One training layout, measured on this machine with real steps of the recipe's training data."""

    batch_size: int
    grad_accum: int
    precision: str
    gradient_checkpointing: bool
    parameter_bytes: int
    """All weights (frozen ones too), as held in memory, plus the copies of frozen Linear weights that training
    under autocast holds in the autocast dtype (runtime.precision.frozen_linears_cast)."""
    gradient_bytes: int
    """Gradients of the trainable weights (same dtype as the weights)."""
    optimizer_bytes: int
    """AdamW state (two moments per trainable weight), measured after a step."""
    activation_bytes: int
    """Tensors autograd keeps for the backward pass, on the longest micro-batch of the epoch (its worst case);
    with gradient checkpointing, plus one block's worth that is recomputed at a time."""
    peak_bytes: int
    """parameters + gradients + optimizer + activations: the model's own peak (CUDA: the allocator's measured
    peak, when it is larger)."""
    step_seconds: float
    """Median seconds per optimizer step over the timed steps."""
    tokens_per_second: float
    """Non-padding tokens (the objective's UNIT) per second over the timed steps (one process)."""
    steps_timed: int

    def overrides(self) -> list[str]:
        return [f"train.batch_size={self.batch_size}", f"train.grad_accum={self.grad_accum}",
                f"train.precision={self.precision}",
                f"train.gradient_checkpointing={str(self.gradient_checkpointing).lower()}"]


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            key = (t.untyped_storage().data_ptr(), t.device)
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
    return total


class _SavedTensors:
    """Count the bytes autograd saves for backward (activations), each storage once, leaving out the `held`
    tensors (the frozen weights' cast copies, counted with the parameters)."""

    def __init__(self, held=()):
        self.storages: dict = {}
        self.held = {(t.untyped_storage().data_ptr(), t.device) for t in held}

    def pack(self, t: torch.Tensor):
        if t.device.type != "meta":
            storage = t.untyped_storage()
            key = (storage.data_ptr(), t.device)
            if key not in self.held:
                self.storages[key] = storage.nbytes()
        return t

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())


def _blocks(model) -> int:
    from ..methods.base import transformer_layers

    return max(len(transformer_layers(model)), 1)


def _activations(loop, longest: list[int], held, model, cfg, reference: dict | None) -> int:
    """One step on the epoch's longest micro-batch: the bytes autograd saves for it (beyond the `held` weights).
    With gradient checkpointing, recomputation holds one block's activations at a time, on top of what stays
    saved outside them: the block's share comes from the same layout without checkpointing (`reference`, keyed
    by micro-batch and precision) where it was measured."""
    saved = _SavedTensors(held)
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        loop.train_step([longest])
    activations = saved.bytes
    if cfg.gradient_checkpointing:
        full = (reference or {}).get((cfg.batch_size, cfg.precision))
        activations += (full if full is not None else activations) // _blocks(model)
    elif reference is not None:
        reference[(cfg.batch_size, cfg.precision)] = activations
    return activations


def measure(config: RunConfig, job, steps: int = 5, reference_activations: dict | None = None) -> Measurement:
    """Run 1 + `steps` optimizer steps of `config`'s layout on `job.model` (its weights change; nothing is
    saved) and measure them. The first step runs the epoch's longest micro-batch: it is the activation
    peak and warms up the kernels; the next `steps` are timed."""
    cfg = config.train
    # accelerate marks a prepared model and returns it untouched next time: unwrap it and clear the mark so
    # that this layout's precision (autocast wrapper) is applied, not the previous layout's
    model = extract_model_from_parallel(job.model, keep_fp32_wrapper=False)
    model.__dict__.pop("_is_accelerate_prepared", None)
    set_gradient_checkpointing(model, cfg.gradient_checkpointing)
    with tempfile.TemporaryDirectory(prefix="tunecraft-plan-") as tmp:
        session = RunSession(config.model_copy(update={"output_dir": tmp}), overwrite=True)
        session.start(model, job.train_enc.lengths)
        params = _tensor_bytes(model.parameters())
        loop = session.loop(model, job.task, job.train_enc, None, job.data.label_map, job.base.pad_id,
                            job.method.plugins(model, job.task, session.steps))
        acc, optimizer, dtype = session.acc, session.optimizer, session.dtype
        # the loop's run() holds frozen Linear weights in the autocast dtype and swaps in MaskedDropout on CPU:
        # time and count the steps the same way
        with (frozen_linears_cast(model, dtype) as held,
              masked_dropout(model, acc.device.type == "cpu" and not is_sharded(acc))):
            params += _tensor_bytes(held)
            windows = epoch_windows(job.train_enc.lengths, cfg, config.seed, 0)
            lengths = job.train_enc.lengths
            longest = max((b for w in windows for b in w), key=lambda b: max(lengths[i] for i in b) * len(b))
            cuda = acc.device.type == "cuda"
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            activations = _activations(loop, longest, held, model, cfg, reference_activations)
            timed, tokens_before = [], loop.state.train_tokens
            seconds_before = loop.state.train_seconds
            for window in windows[: max(steps, 1)]:
                start = time.perf_counter()
                loop.train_step(window)
                timed.append(time.perf_counter() - start)
            tokens = loop.state.train_tokens - tokens_before
            seconds = loop.state.train_seconds - seconds_before
            grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
            opt = _tensor_bytes(t for state in optimizer.state.values() for t in state.values())
            peak = params + grads + opt + activations
            if cuda:
                peak = max(peak, torch.cuda.max_memory_allocated())
    optimizer.zero_grad(set_to_none=True)
    del optimizer, loop, session
    acc.free_memory()
    return Measurement(batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, precision=cfg.precision,
                       gradient_checkpointing=cfg.gradient_checkpointing, parameter_bytes=params,
                       gradient_bytes=grads, optimizer_bytes=opt, activation_bytes=activations, peak_bytes=peak,
                       step_seconds=statistics.median(timed), tokens_per_second=tokens / max(seconds, 1e-9),
                       steps_timed=len(timed))


def estimate(config: RunConfig, job, m: Measurement, processes: int = 1) -> dict:
    """Time per epoch and for the run, from the measured tokens/s and the epoch's real token count. With
    several processes each takes 1/N of the tokens (ideal scaling; communication not counted)."""
    per_epoch_tokens = sum(job.train_enc.lengths)
    epoch_seconds = per_epoch_tokens / max(m.tokens_per_second, 1e-9) / processes
    cfg = config.train
    if cfg.max_steps:
        windows = len(epoch_windows(job.train_enc.lengths, cfg, config.seed, 0, 0, processes))
        epochs = cfg.max_steps / max(windows, 1)
    else:
        epochs = cfg.epochs
    return {"epoch_tokens": per_epoch_tokens, "epoch_seconds": round(epoch_seconds, 3), "epochs": round(epochs, 3),
            "run_seconds": round(epoch_seconds * epochs, 3),
            "steps": planned_steps(job.train_enc.lengths, cfg, config.seed, processes)}


def _layout(config: RunConfig, batch_size: int, grad_accum: int, precision: str, checkpointing: bool) -> RunConfig:
    out = copy.deepcopy(config)
    out.train.batch_size, out.train.grad_accum = batch_size, grad_accum
    out.train.precision, out.train.gradient_checkpointing = precision, checkpointing
    return out


def candidates(config: RunConfig) -> list[tuple[int, int, str, bool]]:
    """Layouts with the recipe's global batch (batch_size × grad_accum): micro-batches that divide it, fp32
    and bf16 (where the hardware has it), without and with gradient checkpointing."""
    target = config.train.batch_size * config.train.grad_accum
    sizes = sorted({b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, target) if b <= target and target % b == 0},
                   reverse=True)
    bf16 = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_has_bf16()
    precisions = ["bf16", "fp32"] if bf16 else ["fp32"]
    return [(b, target // b, p, ckpt) for ckpt in (False, True) for p in precisions for b in sizes]


def plan(config: RunConfig, steps: int = 5, memory_budget: int | None = None, auto: bool = False,
         processes: int = 1, log=print) -> dict:
    """Measure the recipe's own layout, or (auto) search layouts for the fastest one whose peak fits
    `memory_budget` bytes. Largest micro-batches are tried first; a layout is skipped once one that needs no
    less memory and is no faster can be ruled out (gradient checkpointing only where nothing fits without it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("plan measures one process: run it without accelerate launch and pass --processes N "
                          "for the time estimate on N processes")
    prepare_process(config)
    config = copy.deepcopy(config)
    config.train.progress, config.train.tensorboard, config.train.trackers = False, False, []
    job = prepare_job(config)
    trainable, total = count_parameters(job.model)
    result = {"recipe": config.name, "base_model": config.model.base, "method": config.method.name,
              "trainable_params": trainable, "total_params": total, "train_examples": len(job.train_enc),
              "processes": processes, "memory_budget_bytes": memory_budget, "measured": [],
              "unit": job.task.UNIT}
    if not auto:
        if config.train.precision == "auto":
            config.train.precision = "bf16" if resolve_precision("auto")[1] is not None else "fp32"
        m = measure(config, job, steps)
        result["measured"].append(asdict(m))
        result["chosen"] = asdict(m)
        result["fits"] = memory_budget is None or m.peak_bytes <= memory_budget
        result["estimate"] = estimate(config, job, m, processes)
    else:
        if memory_budget is None:
            raise ConfigError("plan --auto needs --memory-budget (e.g. 4GB)")
        activations: dict = {}
        best, fitted_without_ckpt = None, set()
        for batch_size, accum, precision, ckpt in candidates(config):
            if ckpt and precision in fitted_without_ckpt:
                continue  # checkpointing only trades speed for memory: not needed when a layout already fits
            m = measure(_layout(config, batch_size, accum, precision, ckpt), job, steps, activations)
            fits = m.peak_bytes <= memory_budget
            result["measured"].append({**asdict(m), "fits": fits})
            log(f"  batch {batch_size:>4} × accum {accum:<3} {precision:<4} checkpointing "
                f"{'on ' if ckpt else 'off'}: peak {mb(m.peak_bytes):>8} MB, "
                f"{m.tokens_per_second:>8.0f} {job.task.UNIT}/s"
                f"{'' if fits else '  (over budget)'}")
            if fits and not ckpt:
                fitted_without_ckpt.add(precision)
            if fits:
                if best is None or m.tokens_per_second > best.tokens_per_second:
                    best = m
        if best is None:
            raise ConfigError(f"no layout fits {mb(memory_budget)} MB: the smallest measured peak was "
                              f"{mb(min(r['peak_bytes'] for r in result['measured']))} MB")
        chosen = _layout(config, best.batch_size, best.grad_accum, best.precision, best.gradient_checkpointing)
        result["chosen"] = asdict(best)
        result["fits"] = True
        result["overrides"] = best.overrides()
        result["estimate"] = estimate(chosen, job, best, processes)
        result["config"] = chosen
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def format_plan(result: dict) -> str:
    c, e = result["chosen"], result["estimate"]
    unit = result.get("unit", "tokens")  # what a step trains on (the objective's UNIT)
    budget = result["memory_budget_bytes"]
    lines = [
        f"{result['recipe']}: {result['method']} on {result['base_model']}, {result['trainable_params']:,} of "
        f"{result['total_params']:,} parameters trained, {result['train_examples']:,} training examples",
        f"layout: batch {c['batch_size']} × accum {c['grad_accum']}, {c['precision']}, gradient checkpointing "
        f"{'on' if c['gradient_checkpointing'] else 'off'} ({c['steps_timed']} timed steps, one process)",
        "memory (model's own peak; the process also holds data, tokenizer and libraries):",
        f"  parameters   {mb(c['parameter_bytes']):>9} MB",
        f"  gradients    {mb(c['gradient_bytes']):>9} MB",
        f"  optimizer    {mb(c['optimizer_bytes']):>9} MB",
        f"  activations  {mb(c['activation_bytes']):>9} MB   (longest micro-batch of the epoch)",
        f"  peak         {mb(c['peak_bytes']):>9} MB"
        + (f"   budget {mb(budget)} MB: {'fits' if result['fits'] else 'DOES NOT FIT'}" if budget else ""),
        f"  process peak RSS so far {mb(result['peak_rss_bytes'])} MB",
        f"speed: {c['tokens_per_second']:,.0f} {unit}/s, {c['step_seconds']:.3f} s per optimizer step",
        f"estimate: {_duration(e['epoch_seconds'])} per epoch ({e['epoch_tokens']:,} {unit}), "
        f"{_duration(e['run_seconds'])} for the run ({e['epochs']} epochs, {e['steps']} steps"
        f"{', ' + str(result['processes']) + ' processes, ideal scaling' if result['processes'] > 1 else ''}); "
        "training only, evaluation not included",
    ]
    if "overrides" in result:
        lines.append("chosen overrides: " + " ".join(result["overrides"]))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
