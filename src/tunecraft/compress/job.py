"""`tunecraft compress RUN VARIANT...`: make each named variant of a fine-tuned run, then measure them all.
(Generative runs have their own variants and measurements: compress/llm.py.)

Variant names (a registry of patterns, each built by one job module):
  int8                       dynamic int8 (PyTorch) of the run's model
  onnx                       ONNX export, run by ONNX Runtime (logits checked against PyTorch)
  onnx-int8-dynamic          ONNX Runtime dynamic int8
  onnx-int8-static           ONNX Runtime static int8, calibrated on training samples
  distill-3l                 a 3-layer student distilled from the run (any N < the run's layers)
  distill-3l-int8            that student, dynamic int8
  prune-50                   global unstructured magnitude pruning to 50% sparsity (any 1..99)
  heads-25                   25% of the attention heads removed by importance (any 1..99)
  layers-2                   2 whole layers removed (those that cost least)
  all                        int8 onnx onnx-int8-dynamic onnx-int8-static distill-3l distill-3l-int8 prune-50
                             heads-25 layers-2
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from ..config import build_config
from ..data import load_classification_data
from ..data.dataset import encode
from ..errors import ConfigError, TunecraftError
from ..io import refuse_existing, write_text
from ..plugins import AfterStep, LossTerm
from ..runs import CONFIG, RunFolder, read_meta, run_model_dir
from ..runtime.precision import resolve as resolve_precision
from ..tasks import build_task
from ..trained import load_trained
from . import bench
from .distill import DistillationLoss, DistillSettings, build_student
from .onnx_export import OnnxSettings
from .onnx_export import make as make_onnx
from .prune import PruneSettings, mask_hook, pruned_meta, sparsity_of
from .prune import prune as prune_model
from .prune import save as save_pruned
from .quantize import QuantizeSettings
from .quantize import make as make_int8
from .settings import Options
from .variant import update_meta

ALL = ["int8", "onnx", "onnx-int8-dynamic", "onnx-int8-static", "distill-3l", "distill-3l-int8", "prune-50",
       "heads-25", "layers-2"]


@dataclass
class Variant:
    name: str
    job: str  # distill | prune | quantize | onnx
    settings: BaseModel
    source: str | None = None  # another variant's name; None: the run's own model
    needs: list[str] = field(default_factory=list)


PATTERNS = [
    (r"int8", lambda m, o: Variant(m[0], "quantize", QuantizeSettings())),
    (r"onnx", lambda m, o: Variant(m[0], "onnx", OnnxSettings(tolerance=o.onnx_tolerance))),
    (r"onnx-int8-(dynamic|static)", lambda m, o: Variant(m[0], "onnx", OnnxSettings(
        quantize=m[1], calibration_samples=o.calibration_samples, tolerance=o.onnx_tolerance))),
    (r"distill-(\d+)l", lambda m, o: Variant(m[0], "distill", DistillSettings(
        layers=int(m[1]), temperature=o.temperature, weight=o.distill_weight, epochs=o.distill_epochs,
        max_steps=o.distill_max_steps, lr=o.distill_lr))),
    (r"(distill-\d+l)-int8", lambda m, o: Variant(m[0], "quantize", QuantizeSettings(), source=m[1])),
    (r"prune-(\d+)", lambda m, o: Variant(m[0], "prune", PruneSettings(
        kind="unstructured", sparsity=_percent(m), recover_steps=o.recover_steps, recover_lr=o.recover_lr))),
    (r"heads-(\d+)", lambda m, o: Variant(m[0], "prune", PruneSettings(
        kind="heads", heads=_percent(m), recover_steps=o.recover_steps, recover_lr=o.recover_lr))),
    (r"layers-(\d+)", lambda m, o: Variant(m[0], "prune", PruneSettings(
        kind="layers", layers=int(m[1]), recover_steps=o.recover_steps, recover_lr=o.recover_lr))),
]


def _percent(match) -> float:
    value = int(match[1])
    if not 1 <= value <= 99:
        raise ConfigError(f"variant '{match[0]}': the percentage must be 1..99")
    return value / 100


def parse_variants(names: list[str], options: Options | None = None) -> list[Variant]:
    """Variant names → Variants, sources first (distill-3l-int8 brings distill-3l with it)."""
    options = options or Options()
    wanted = [n for name in names for n in (ALL if name == "all" else [name])]
    if not wanted:
        raise ConfigError("name at least one variant, e.g. int8 onnx distill-3l (or all)")
    out: dict[str, Variant] = {}
    for name in wanted:
        for pattern, build in PATTERNS:
            match = re.fullmatch(pattern, name)
            if match:
                variant = build(match, options)
                if variant.source and variant.source not in out:
                    out.update({v.name: v for v in parse_variants([variant.source], options)})
                out.setdefault(name, variant)
                break
        else:
            raise ConfigError(f"unknown variant '{name}'; known: int8, onnx, onnx-int8-dynamic, onnx-int8-static, "
                              "distill-<N>l, distill-<N>l-int8, prune-<percent>, heads-<percent>, layers-<N>, all")
    return list(out.values())


class Context:
    """The fine-tuned run being compressed: its config, model, data (encoded once) and output folder."""

    def __init__(self, run: Path, out: Path, overwrite: bool, progress: bool):
        self.run, self.out, self.overwrite, self.progress = run, out, overwrite, progress
        self.scratch = Path(tempfile.mkdtemp(prefix="tunecraft-compress-"))
        folder = RunFolder(run)
        if not folder.has_config():
            raise TunecraftError(f"{run} is not a training run folder (no {CONFIG}): compress needs the run's "
                                 "recipe to reach its training data")
        self.config = folder.config(build_config)
        self.original = load_trained(run)
        if self.original.meta.get("format", "transformers") != "transformers":
            raise TunecraftError(f"{run}: compress starts from a fine-tuned run, not from a compressed variant")
        if "compress" not in build_task(self.original.meta).OFFERS or self.original.meta.get("adapter_required"):
            raise TunecraftError(f"{run}: compress takes classification runs with a plain model/ folder (this one: "
                                 f"{self.original.meta['task']}, method {self.original.meta.get('method')})")
        data = load_classification_data(self.config.data)
        self.label_map = data.label_map
        tok, max_len, col = self.original.tokenizer, self.original.meta["max_length"], data.columns.label
        self.train_enc = encode(tok, data.train, max_len, data.label_map, col)
        self.validation_enc = encode(tok, data.validation or data.test, max_len, data.label_map, col)
        self.test_enc = encode(tok, data.test or data.validation, max_len, data.label_map, col)

    def source(self, name: str | None):
        return self.original if name is None else load_trained(self.out / name)

    def train_config(self, name: str, **train):
        """The run's own recipe, retargeted: a variant's training job (distillation, recovery)."""
        raw = self.config.model_dump(mode="json")
        raw.update(name=name, output_dir=str(self.out), method={"name": "full"})
        raw["model"]["base"] = str(self.original.path)  # the tokenizer; the model itself is passed in
        raw["model"]["dropout"] = None
        raw["train"].update(tensorboard=False, progress=self.progress, checkpoint_every=None, **train)
        return build_config(raw, source=f"{RunFolder(self.run).config_file} (for {name})")


def _slice(enc, n: int):
    from ..data.dataset import Encoded

    types = enc.token_type_ids[:n] if enc.token_type_ids is not None else None
    return Encoded(enc.input_ids[:n], types, enc.labels[:n] if enc.labels else None, 0)


def run_distill(ctx: Context, v: Variant) -> dict:
    from ..train import train

    s: DistillSettings = v.settings
    student, info = build_student(ctx.original, s)
    _, dtype = resolve_precision(ctx.config.train.precision)
    loss = DistillationLoss(ctx.original.model, s.temperature, s.weight, dtype)
    config = ctx.train_config(v.name, epochs=s.epochs, max_steps=s.max_steps, lr=s.lr, batch_size=s.batch_size)
    summary = train(config, overwrite=ctx.overwrite, plugins=[LossTerm(loss)], model=student)
    update_meta(config.run_dir, distillation={**info, "student_layers": s.layers, "temperature": s.temperature,
                                              "weight": s.weight, "teacher": str(ctx.run)})
    return {"test_accuracy": summary["metrics"].get("accuracy"), "train_seconds": summary["train_seconds"]}


def run_prune(ctx: Context, v: Variant) -> dict:
    from ..train import train

    s: PruneSettings = v.settings
    source = ctx.source(v.source)
    enc = _slice(ctx.train_enc if s.kind == "heads" else ctx.validation_enc, s.importance_samples)
    model, info = prune_model(source, s, enc)
    info["recover_steps"] = s.recover_steps
    if not s.recover_steps:
        meta = save_pruned(model, source, ctx.out / v.name, info, ctx.overwrite)
        return {k: x for k, x in meta["pruning"].items() if k == "measured_sparsity"}
    plugins = [AfterStep(mask_hook(info["masks"]))] if "masks" in info else []
    config = ctx.train_config(v.name, max_steps=s.recover_steps, lr=s.recover_lr, eval_every=None,
                              warmup_ratio=0.0)
    train(config, overwrite=ctx.overwrite, plugins=plugins, model=model)
    meta = pruned_meta(model, info)
    if "kept_heads" in info:
        meta["format"] = "pruned-heads"
    if "masks" in info:
        meta["pruning"]["measured_sparsity"] = sparsity_of(load_trained(config.run_dir).model)
    update_meta(config.run_dir, **meta)
    return {k: x for k, x in meta["pruning"].items() if k == "measured_sparsity"}


def run_quantize(ctx: Context, v: Variant) -> dict:
    source = ctx.source(v.source)
    if source.meta.get("format", "transformers") != "transformers":
        raise TunecraftError(f"{v.name}: int8 starts from a plain transformers model, not '{source.meta['format']}'")
    return make_int8(source, ctx.out / v.name, v.settings, ctx.overwrite)


def run_onnx(ctx: Context, v: Variant) -> dict:
    source = ctx.source(v.source)
    s: OnnxSettings = v.settings
    calibration = _slice(ctx.train_enc, s.calibration_samples) if s.quantize == "static" else None
    cache = ctx.scratch / f"onnx-{v.source or 'original'}"
    return make_onnx(source, ctx.out / v.name, s, _slice(ctx.validation_enc, 128), calibration, ctx.overwrite,
                     cache)


JOBS = {"distill": run_distill, "prune": run_prune, "quantize": run_quantize, "onnx": run_onnx}


def compress(run: str | Path, variants: list[str], out: str | Path | None = None, options: Options | None = None,
             measure: bool = True, overwrite: bool = False, progress: bool = True) -> dict:
    """Make each named variant of a fine-tuned run in <out>/<variant>/ (default RUN/compressed/), each a model
    or run folder that eval, predict and serve load; then measure them all against the original."""
    run = Path(run)
    options = options or Options()
    run_model_dir(run)  # a clear error for a folder that is not a run
    out = Path(out) if out else run / "compressed"
    if build_task(read_meta(run)).GENERATIVE:  # causal LMs: weight-only int8/int4 and GGUF (compress/llm.py)
        from .llm import compress_llm

        result = compress_llm(run, variants, out, options, measure, overwrite)
        write_text(out / "made.json", json.dumps(result["variants"], indent=2))
        return result
    plan = parse_variants(variants, options)
    for v in plan:
        refuse_existing(out / v.name, overwrite)
    ctx = Context(run, out, overwrite, progress)
    made = {}
    try:
        for v in plan:
            made[v.name] = JOBS[v.job](ctx, v) or {}
    finally:
        shutil.rmtree(ctx.scratch, ignore_errors=True)
    result: dict = {"variants": made, "folders": {v.name: str(out / v.name) for v in plan}}
    if measure:
        folders = {"original": run, **{v.name: out / v.name for v in plan}}
        measured = bench.benchmark(folders, ctx.test_enc, ctx.label_map, threads=options.threads,
                                   latency_samples=options.latency_samples, rounds=options.rounds)
        result["measured"] = measured
        result["table"] = bench.table(measured)
        result["report"] = str(bench.write(measured, out, run))
    write_text(out / "made.json", json.dumps(made, indent=2, default=str))
    return result
