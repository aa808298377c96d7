"""The steps of gpu/check.sh: one prepared check of what tunecraft claims about GPUs (mixed precision against
CPU fp32, exact accumulation, resume and FSDP2, QLoRA, the planner's memory reading, speed against a Hugging Face
Trainer script). `python gpu/check.py STEP` runs one step and writes WORK/steps/STEP.json; `summary` gathers
them into OUT/summary.json. `--cpu` (GPU_CHECK_CPU=1) is the dry run: tiny sizes, CUDA-only steps skipped.

Only tunecraft's public surface is used (tunecraft.train, build_config, train_tokenizer, the CLI), so that the
check keeps running while the code behind it changes. Module level imports the standard library only: a step
that cannot import torch, transformers or tunecraft fails with the error instead of stopping the script."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVING_REASON = "the causal-LM server runs on CPU (docs/serving.md); its GPU check is not written yet"

# Tolerances: a run under autocast against the same run in fp32 on the CPU (same seed, data order and initial
# weights, dropout off). `first`: relative difference of the first step's loss (same weights and batch, so only
# the forward pass's rounding differs: bf16 keeps 8 significant bits, about 0.4% per operation, fp16 11 bits).
# `tail`: relative difference of the mean loss over the last 5 logged steps (rounding compounds over the updates).
# fp32 on CUDA differs from fp32 on CPU by summation order only.
TOLERANCES = {
    "fp32": {"first": 1e-4, "tail": 0.01},
    "bf16": {"first": 0.01, "tail": 0.05},
    "fp16": {"first": 0.003, "tail": 0.03},
}
# accumulation and FSDP compare fp32 runs whose arithmetic differs only in summation order (tests/test_training.py)
EXACT = {"atol": 2e-5, "rtol": 1e-4}
# the planner's peak (CUDA: the allocator's peak over its measured steps) against the real run's
# torch.cuda.max_memory_allocated(): within 25% either way
PLAN_BAND = (0.8, 1.25)
GOALS = {"throughput_ratio": 1.5, "encoder_mfu": 0.40}

# sizes of each step's job: `gpu` fills a few seconds of an H200 per run, `cpu` keeps the dry run under ~90 s on
# two busy cores. `encoder`/`decoder` name the correctness models (tunecraft's own scratch sizes).
SIZES = {
    "gpu": {
        "encoder": "scratch:encoder-mini", "decoder": "scratch:decoder-mini", "max_length": 64,
        "precision": {"samples": 1024, "steps": 30, "batch": 32, "docs": 200},
        "accum": {"samples": 256, "steps": 3},
        "resume": {"samples": 384, "batch": 16, "epochs": 2, "cut": 17, "checkpoint_every": 7, "eval_every": 10},
        "fsdp": {"samples": 256, "steps": 6, "batch": 16},
        "qlora": {"samples": 64, "steps": 10, "batch": 8, "max_length": 128, "hidden": 256, "layers": 4},
        "plan": {"samples": 2048, "steps": 20, "batch": 64, "max_length": 128},
        "speed_encoder": {"layers": 12, "hidden": 768, "heads": 12, "samples": None, "batch": 64, "max_length": 128},
        "speed_decoder": {"layers": 12, "hidden": 768, "heads": 12, "steps": 100, "batch": 16, "max_length": 512},
        "peak_n": 8192,
    },
    "cpu": {
        "encoder": "scratch:encoder-tiny", "decoder": "scratch:decoder-tiny", "max_length": 48,
        "precision": {"samples": 256, "steps": 10, "batch": 16, "docs": 12},
        "accum": {"samples": 64, "steps": 2},
        "resume": {"samples": 96, "batch": 8, "epochs": 2, "cut": 9, "checkpoint_every": 4, "eval_every": 5},
        "fsdp": {"samples": 64, "steps": 3, "batch": 8},
        "qlora": {"samples": 16, "steps": 3, "batch": 4, "max_length": 64, "hidden": 64, "layers": 2},
        "plan": {"samples": 64, "steps": 3, "batch": 8, "max_length": 48},
        "speed_encoder": {"layers": 2, "hidden": 64, "heads": 2, "samples": 64, "batch": 16, "max_length": 48},
        "speed_decoder": {"layers": 2, "hidden": 64, "heads": 2, "steps": 4, "batch": 4, "max_length": 64},
        "peak_n": 512,
    },
}


class Ctx:
    """Where the step reads and writes, set by gpu/check.sh through the environment."""

    def __init__(self):
        self.cpu = os.environ.get("GPU_CHECK_CPU") == "1"
        self.mode = "cpu" if self.cpu else "gpu"
        self.size = SIZES[self.mode]
        self.out = Path(os.environ.get("OUT") or ROOT / "gpu" / "out")
        self.work = Path(os.environ.get("GPU_CHECK_WORK") or ROOT / "gpu" / "out" / "work")
        self.data = Path(os.environ.get("GPU_CHECK_DATA") or ROOT / "gpu" / "carry" / "data")
        self.steps = self.work / "steps"
        self.runs = self.work / "runs"
        self.models = self.work / "models"
        for d in (self.steps, self.runs, self.models):
            d.mkdir(parents=True, exist_ok=True)

    @property
    def cuda(self) -> bool:
        import torch

        return (not self.cpu) and torch.cuda.is_available()


class Skip(Exception):
    """A step that cannot run here; the message says why."""


def passed(**details) -> dict:
    return {"status": "passed", **details}


def judged(ok: bool, why: str, **details) -> dict:
    return {"status": "passed" if ok else "failed", **({} if ok else {"reason": why}), **details}


def need_cuda(ctx: Ctx, what: str) -> None:
    if ctx.cpu:
        raise Skip(f"CPU dry run: {what} needs CUDA")
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"no CUDA device visible (torch {torch.__version__}); {what} needs one "
                           "(bash gpu/check.sh --cpu is the dry run)")


def need_data(ctx: Ctx) -> None:
    if not (ctx.data / "manifest.json").is_file():
        raise RuntimeError(f"no check data in {ctx.data}: run `bash gpu/prepare.sh` and carry gpu/carry")


# -- data: what prepare.sh puts in the carried folder (the GPU machine has no tunecraft cache, no network) ----------

def export_data(dest: Path, lee_docs: int | None, bpe_vocab: int) -> dict:
    """mr as JSONL files (tunecraft's own split), the wiki-en corpus (Wikipedia extract + Lee news) as a text file,
    BERT's uncased WordPiece tokenizer (from the bundled MiniLM) and a byte-level BPE tokenizer trained on that
    text. `lee_docs`: the dry run's small corpus instead, that many Lee news articles read straight from the file
    (parsing the Wikipedia dump takes seconds)."""
    from transformers import AutoTokenizer

    import tunecraft
    from tunecraft.assets import model_path, package_dir
    from tunecraft.config import build_config
    from tunecraft.data import load_classification_data
    from tunecraft.pretrain.config import TokenizerRecipe

    dest.mkdir(parents=True, exist_ok=True)
    data = load_classification_data(build_config({"data": {"dataset": "mr"}}).data)
    counts = {}
    for split in ("train", "validation", "test"):
        rows = getattr(data, split)
        with open(dest / f"mr-{split}.jsonl", "w", encoding="utf-8") as fh:
            for e in rows:
                fh.write(json.dumps({"text": e.text, "label": e.label}, ensure_ascii=False) + "\n")
        counts[f"mr-{split}"] = len(rows)
    if lee_docs:
        lee = package_dir("gensim") / "test" / "test_data" / "lee_background.cor"
        docs = [[x.strip()] for x in lee.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
        docs = docs[:lee_docs]
    else:
        from tunecraft.pretrain.corpora import wiki_en

        docs = wiki_en()
    (dest / "wiki.txt").write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
    counts["text_documents"] = len(docs)
    AutoTokenizer.from_pretrained(str(model_path("minilm-l6"))).save_pretrained(dest / "tokenizer-bert")
    recipe = TokenizerRecipe(name="tokenizer-bpe", output_dir=str(dest), kind="bpe", vocab_size=bpe_vocab,
                             corpus={"files": [str(dest / "wiki.txt")], "heldout": 0.02})
    bpe = tunecraft.train_tokenizer(recipe, overwrite=True)
    manifest = {"counts": counts, "bpe_vocab": bpe["vocab_size"], "made": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                     time.gmtime())}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def step_data(ctx: Ctx) -> dict:
    if (ctx.data / "manifest.json").is_file():
        manifest = json.loads((ctx.data / "manifest.json").read_text(encoding="utf-8"))
        return passed(source="carried", path=str(ctx.data), **manifest)
    if not ctx.cpu:
        raise RuntimeError(f"no check data in {ctx.data}: run `bash gpu/prepare.sh` here and carry gpu/carry")
    manifest = export_data(ctx.data, lee_docs=ctx.size["precision"]["docs"] * 4, bpe_vocab=600)
    return passed(source="exported now (dry run)", path=str(ctx.data), **manifest)


# -- environment -------------------------------------------------------------------------------------------------

def matmul_peak(device: str, n: int, repeats: int = 10) -> float:
    """bf16 matmul FLOP/s of this device: the best of `repeats` n³ products after a warm-up."""
    import torch

    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "accelerate", "peft", "tokenizers", "safetensors", "pydantic",
                 "bitsandbytes", "numpy", "scikit-learn", "seqeval"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def step_env(ctx: Ctx) -> dict:
    info = {"versions": versions(), "mode": ctx.mode, "host": platform.node()}
    pins = {"torch": "2.13", "transformers": "5.24", "accelerate": "1.15", "peft": "0.21"}
    info["differs_from_pins"] = {k: v for k, v in info["versions"].items()
                                 if k in pins and v and not v.startswith(pins[k])}
    problems = {}
    for module in ("tunecraft.train", "tunecraft.train.plan", "tunecraft.pretrain.job", "tunecraft.tasks",
                   "tunecraft.methods"):
        try:
            __import__(module)
        except Exception as err:  # an API tunecraft uses that this image's versions lack: say which
            problems[module] = f"{type(err).__name__}: {err}"
    info["import_errors"] = problems
    import torch

    device = "cuda" if ctx.cuda else "cpu"
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                       "memory_gib": round(props.total_memory / 2**30, 1), "bf16": torch.cuda.is_bf16_supported(),
                       "cuda": torch.version.cuda}
        try:
            nccl = torch.cuda.nccl.version()
            info["gpu"]["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
        except Exception as err:  # noted, not fatal: the fsdp step shows whether NCCL works
            info["gpu"]["nccl"] = f"unknown ({err})"
    elif not ctx.cpu:
        return judged(False, f"no CUDA device visible to torch {torch.__version__}", **info)
    peak = matmul_peak(device, ctx.size["peak_n"])
    info["bf16_matmul_peak_tflops"] = round(peak / 1e12, 2)
    info["peak_device"] = device
    (ctx.work / "peak.json").write_text(json.dumps({"flops": peak, "device": device}), encoding="utf-8")
    return judged(not problems, f"tunecraft does not import here: {problems}", **info)


# -- running tunecraft -----------------------------------------------------------------------------------------

def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def classification_raw(ctx: Ctx, name: str, extra: dict) -> dict:
    """A classification recipe on the carried mr files: a scratch encoder with a character tokenizer, dropout
    off, one log line per step, no baselines (they need a pretrained encoder)."""
    raw = {"name": name, "output_dir": str(ctx.runs), "seed": 42,
           "model": {"base": ctx.size["encoder"], "tokenizer": "chars", "max_length": ctx.size["max_length"],
                     "dropout": 0.0},
           "data": {"dataset": None, "train": str(ctx.data / "mr-train.jsonl"),
                    "validation": str(ctx.data / "mr-validation.jsonl"), "test": str(ctx.data / "mr-test.jsonl"),
                    "max_eval_samples": 64},
           "method": {"name": "full"},
           "train": {"lr": 1e-3, "precision": "fp32", "log_every": 1, "eval_each_epoch": False,
                     "tensorboard": False, "progress": False, "warmup_ratio": 0.0},
           "baselines": {"zero_shot": False}}
    return deep_merge(raw, extra)


def train_run(ctx: Ctx, name: str, extra: dict, **kwargs) -> tuple[dict, Path]:
    from tunecraft.config import build_config
    from tunecraft.train import train

    config = build_config(classification_raw(ctx, name, extra), source=name)
    return train(config, overwrite=True, **kwargs), config.run_dir


def pretrain_run(ctx: Ctx, name: str, precision: str, size: dict) -> tuple[dict, Path]:
    """Causal-LM pre-training of the scratch decoder on the carried wiki text (character tokenizer)."""
    from tunecraft.config import load_recipe
    from tunecraft.pretrain.config import PretrainRecipe
    from tunecraft.pretrain.job import pretrain

    raw = {"name": name, "output_dir": str(ctx.runs), "seed": 42,
           "model": {"base": ctx.size["decoder"], "tokenizer": "chars", "max_length": ctx.size["max_length"]},
           "corpus": {"files": [str(ctx.data / "wiki.txt")], "heldout": 0.05, "max_documents": size["docs"]},
           "objective": {"name": "clm"},
           "train": {"max_steps": size["steps"], "batch_size": size["batch"], "lr": 1e-3, "precision": precision,
                     "log_every": 1, "eval_each_epoch": False, "tensorboard": False, "progress": False,
                     "warmup_ratio": 0.0},
           "mfu_probe": False}
    path = ctx.runs / f"{name}.yaml"
    write_yaml(path, raw)
    recipe = load_recipe(path, [], PretrainRecipe)
    return pretrain(recipe, overwrite=True), recipe.run_dir


def write_yaml(path: Path, raw: dict) -> None:
    import yaml

    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


def train_losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r["loss"] for r in rows if r["type"] == "train"]


def metric_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timing fields, which no two runs share."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "model_flops_per_s", "mfu")} for r in rows]


def weights(run_dir: Path, file: str = "model/model.safetensors") -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / file))


def max_diff(a: dict, b: dict) -> tuple[float, bool]:
    """(largest absolute difference, every tensor within EXACT)."""
    import torch

    if a.keys() != b.keys():
        return float("inf"), False
    worst, close = 0.0, True
    for key in a:
        x, y = a[key].float(), b[key].float()
        worst = max(worst, float((x - y).abs().max()) if x.numel() else 0.0)
        close = close and torch.allclose(x, y, **EXACT)
    return worst, close


# -- correctness --------------------------------------------------------------------------------------------------

def padded_lengths():
    """A step plug-in that adds no loss and records each training batch's padded length (checks padding to
    multiples of 8)."""
    from tunecraft.plugins import StepPlugin

    class PaddedLengths(StepPlugin):
        def __init__(self):
            self.seen: set[int] = set()

        def loss(self, model, outputs, batch, objective):
            self.seen.add(int(batch["input_ids"].shape[1]))
            return None

    return PaddedLengths()


def precision_losses(ctx: Ctx, precision: str, tag: str) -> dict:
    size = ctx.size["precision"]
    pads = padded_lengths()
    enc, enc_dir = train_run(ctx, f"prec-enc-{tag}", {
        "data": {"max_train_samples": size["samples"]},
        "train": {"max_steps": size["steps"], "batch_size": size["batch"], "precision": precision}},
        plugins=[pads])
    dec, dec_dir = pretrain_run(ctx, f"prec-dec-{tag}", precision, size)
    return {"encoder": train_losses(enc_dir), "decoder": train_losses(dec_dir), "device": enc["device"],
            "precision": enc["precision"], "padded_lengths": sorted(pads.seen),
            "encoder_test_accuracy": enc["metrics"].get("accuracy"),
            "decoder_heldout_loss": dec["heldout"].get("loss")}


def compare_losses(ref: list[float], got: list[float], tol: dict) -> dict:
    n = min(len(ref), len(got), 5)
    first = abs(ref[0] - got[0]) / abs(ref[0])
    tail_ref, tail_got = sum(ref[-n:]) / n, sum(got[-n:]) / n
    tail = abs(tail_got - tail_ref) / abs(tail_ref)
    finite = all(math.isfinite(x) for x in got)
    ok = finite and len(ref) == len(got) and first <= tol["first"] and tail <= tol["tail"]
    return {"ok": ok, "first_step_rel_diff": round(first, 6), "tail_rel_diff": round(tail, 5),
            "max_abs_diff": round(max(abs(a - b) for a, b in zip(ref, got)), 6), "finite": finite,
            "tolerance": tol, "ref_first_tail": [round(ref[0], 5), round(tail_ref, 5)],
            "got_first_tail": [round(got[0], 5), round(tail_got, 5)]}


def step_precision(ctx: Ctx) -> dict:
    """The same small jobs (scratch encoder classification, scratch decoder causal LM) in fp32 on the CPU against
    bf16 and fp16 (with its loss scaler) on CUDA; also fp32 on CUDA. Dry run: fp32 against bf16, both on CPU."""
    need_data(ctx)
    if ctx.cuda:
        ref_file = ctx.work / "precision-cpu-fp32.json"
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        proc = subprocess.run([sys.executable, __file__, "_precision_ref", str(ref_file)], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the CPU fp32 reference failed:\n{proc.stderr[-3000:]}")
        ref = json.loads(ref_file.read_text(encoding="utf-8"))
        precisions = ["bf16", "fp16", "fp32"]
    else:
        ref = precision_losses(ctx, "fp32", "cpu-fp32")
        precisions = ["bf16"]
    results, ok = {}, True
    for p in precisions:
        got = precision_losses(ctx, p, f"{'cuda' if ctx.cuda else 'cpu'}-{p}")
        row = {"device": got["device"], "padded_lengths": got["padded_lengths"]}
        for model in ("encoder", "decoder"):
            row[model] = compare_losses(ref[model], got[model], TOLERANCES[p])
            ok = ok and row[model]["ok"]
        if ctx.cuda:  # tunecraft pads batches to multiples of 8 on CUDA (tensor cores)
            row["padded_to_multiple_of_8"] = all(n % 8 == 0 for n in got["padded_lengths"])
            ok = ok and row["padded_to_multiple_of_8"]
        results[p] = row
    skipped = [] if ctx.cuda else ["fp16 (needs CUDA)"]
    return judged(ok, "a loss curve or the padding is outside its tolerance (see runs)", reference=
                  {"device": ref["device"], "padded_lengths": ref["padded_lengths"]}, runs=results,
                  not_run=skipped, steps=ctx.size["precision"]["steps"])


def step_accumulation(ctx: Ctx) -> dict:
    """4 × 8 against 1 × 32 (fp32, dropout off): same logged losses and weights; 1 × 8 as a control that differs."""
    need_data(ctx)
    size = ctx.size["accum"]
    runs = {}
    for tag, batch, accum in (("1x32", 32, 1), ("4x8", 8, 4), ("1x8", 8, 1)):
        summary, run_dir = train_run(ctx, f"accum-{tag}", {
            "data": {"max_train_samples": size["samples"]},
            "train": {"max_steps": size["steps"], "batch_size": batch, "grad_accum": accum,
                      "group_by_length": False}})
        runs[tag] = {"dir": run_dir, "device": summary["device"]}
    big, small, control = (weights(runs[t]["dir"]) for t in ("1x32", "4x8", "1x8"))
    diff, close = max_diff(big, small)
    control_diff, _ = max_diff(big, control)
    losses = {t: train_losses(runs[t]["dir"]) for t in runs}
    loss_diff = max(abs(a - b) for a, b in zip(losses["1x32"], losses["4x8"]))
    ok = close and loss_diff <= 1e-5 and control_diff > 1e-4
    return judged(ok, "4 x 8 and 1 x 32 differ beyond float re-association (or the control did not differ)",
                  device=runs["4x8"]["device"], weights_max_abs_diff=diff, loss_max_abs_diff=loss_diff,
                  control_1x8_weights_max_abs_diff=control_diff, tolerance={**EXACT, "loss_atol": 1e-5},
                  losses=losses)


class Interrupt(Exception):
    pass


def step_resume(ctx: Ctx) -> dict:
    """A run cut mid-epoch and resumed ends as the uninterrupted run did: same metrics log, metrics and weights
    (bit for bit; dropout on). On CUDA with torch's deterministic algorithms, since atomics in the embedding
    backward make even two uninterrupted runs differ in the last bits otherwise; a second uninterrupted run
    measures what differs run to run there, should some kernel stay nondeterministic."""
    need_data(ctx)
    if ctx.cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before the first cuBLAS call
    import torch

    from tunecraft.config import build_config
    from tunecraft.plugins import AfterStep
    from tunecraft.train import train

    size = ctx.size["resume"]
    if ctx.cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)
    extra = {"model": {"dropout": None},
             "data": {"max_train_samples": size["samples"]},
             "train": {"epochs": size["epochs"], "batch_size": size["batch"], "eval_every": size["eval_every"],
                       "checkpoint_every": size["checkpoint_every"], "log_every": 2,
                       "precision": "bf16" if ctx.cuda else "auto"}}
    reference, whole_dir = train_run(ctx, "resume-whole", extra)

    def stop(loop):
        if loop.state.global_step == size["cut"]:
            raise Interrupt

    cut = build_config(classification_raw(ctx, "resume-cut", extra))
    try:
        train(cut, overwrite=True, plugins=[AfterStep(stop)])
        raise RuntimeError(f"the run was not interrupted at step {size['cut']}")
    except Interrupt:
        pass
    checkpoints = sorted(p.name for p in (cut.run_dir / "checkpoints").iterdir() if p.name.startswith("step-"))
    resumed = train(cut, resume=True)
    same_log = metric_rows(whole_dir) == metric_rows(cut.run_dir)
    a, b = weights(whole_dir), weights(cut.run_dir)
    bitwise = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    diff, _ = max_diff(a, b)
    details = {"device": reference["device"], "precision": reference["precision"],
               "deterministic_algorithms": ctx.cuda, "steps": reference["steps"], "interrupted_at": size["cut"],
               "checkpoints_left": checkpoints, "same_metrics_log": same_log,
               "same_metrics": resumed["metrics"] == reference["metrics"], "same_weights_bitwise": bitwise,
               "weights_max_abs_diff": diff, "test_accuracy": reference["metrics"].get("accuracy")}
    ok = bitwise and same_log and details["same_metrics"] and resumed["steps"] == reference["steps"]
    if ctx.cuda and not ok:
        _, again_dir = train_run(ctx, "resume-whole-again", extra)
        noise, _ = max_diff(a, weights(again_dir))
        details["uninterrupted_runs_max_abs_diff"] = noise
        details["uninterrupted_runs_same_log"] = metric_rows(whole_dir) == metric_rows(again_dir)
        if noise > 0:  # not reproducible even uninterrupted: the resume can be no closer than that
            ok = resumed["steps"] == reference["steps"] and diff <= 10 * noise
            details["judged_against_run_to_run_noise"] = True
    return judged(ok, "the resumed run differs from the uninterrupted one", **details)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_fsdp(ctx: Ctx) -> dict:
    """`accelerate launch` with a 1-process FSDP2 config (recipes/accelerate/fsdp.yaml, NCCL on CUDA; the CPU
    dry run takes cpu-fsdp-2proc.yaml, gloo) against the plain run: same losses, metrics and exported weights."""
    if ctx.cpu and os.environ.get("GPU_CHECK_CPU_FSDP") != "1":
        raise Skip("CPU dry run: FSDP2 over NCCL needs CUDA; the gloo path is tested by tests/test_distributed.py "
                   "(GPU_CHECK_CPU_FSDP=1 runs this step's 1-process launch on the CPU, ~1 min)")
    need_data(ctx)
    import yaml

    size = ctx.size["fsdp"]
    source = ROOT / "recipes" / "accelerate" / ("fsdp.yaml" if ctx.cuda else "cpu-fsdp-2proc.yaml")
    launch = yaml.safe_load(source.read_text(encoding="utf-8"))
    launch.update(num_processes=1, main_process_port=free_port())
    launch_file = ctx.runs / "fsdp-1proc.yaml"
    write_yaml(launch_file, launch)
    recipe = ctx.runs / "fsdp-recipe.yaml"
    write_yaml(recipe, classification_raw(ctx, "fsdp-plain", {
        "data": {"max_train_samples": size["samples"]},
        "train": {"max_steps": size["steps"], "batch_size": size["batch"]}}))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    runs = {}
    for tag, prefix in (("plain", [sys.executable, "-m", "tunecraft"]),
                        ("fsdp", [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                                  str(launch_file), "-m", "tunecraft"])):
        cmd = [*prefix, "train", str(recipe), f"name=fsdp-{tag}", "--overwrite"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{tag} run failed ({' '.join(cmd[1:4])} ...):\n{proc.stderr[-3000:]}")
        run_dir = ctx.runs / f"fsdp-{tag}"
        runs[tag] = {"dir": run_dir, "summary": json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))}
    plain, fsdp = runs["plain"], runs["fsdp"]
    lp, lf = train_losses(plain["dir"]), train_losses(fsdp["dir"])
    loss_diff = max(abs(a - b) for a, b in zip(lp, lf)) if len(lp) == len(lf) else float("inf")
    diff, close = max_diff(weights(plain["dir"]), weights(fsdp["dir"]))
    acc_p, acc_f = plain["summary"]["metrics"]["accuracy"], fsdp["summary"]["metrics"]["accuracy"]
    distributed = fsdp["summary"].get("distributed")
    ok = distributed == "FSDP" and close and loss_diff <= 1e-5 and abs(acc_p - acc_f) < 1e-9
    return judged(ok, "the FSDP run differs from the plain one (or did not run under FSDP)",
                  launch_config=f"{source.name} with num_processes: 1", device=fsdp["summary"]["device"],
                  distributed=distributed, processes=fsdp["summary"].get("processes"),
                  loss_max_abs_diff=loss_diff, weights_max_abs_diff=diff, accuracy=[acc_p, acc_f],
                  seconds={"plain": plain["summary"]["train_seconds"], "fsdp": fsdp["summary"]["train_seconds"]},
                  tolerance={**EXACT, "loss_atol": 1e-5})


# -- models made on the spot (random weights: nothing but configs and tokenizers travel) -------------------------

def make_decoder(ctx: Ctx, name: str, arch: str, layers: int, hidden: int, heads: int, max_length: int) -> Path:
    """A randomly initialised causal LM folder (llama or gpt2) with the carried BPE tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    folder = ctx.models / name
    if (folder / "config.json").is_file():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(str(ctx.data / "tokenizer-bpe"))
    torch.manual_seed(0)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if arch == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_positions=max_length, n_embd=hidden, n_layer=layers,
                            n_head=heads, bos_token_id=eos, eos_token_id=eos, pad_token_id=pad)
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=8 * hidden // 3,
                             num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                             max_position_embeddings=max_length, bos_token_id=eos, eos_token_id=eos,
                             pad_token_id=pad, tie_word_embeddings=True)
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_encoder(ctx: Ctx, name: str, layers: int, hidden: int, heads: int, max_length: int) -> Path:
    """A randomly initialised BERT folder (classification head added by whoever loads it) with BERT's vocab."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = ctx.models / name
    if (folder / "config.json").is_file():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(str(ctx.data / "tokenizer-bert"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden,
                        max_position_embeddings=max(512, max_length), pad_token_id=tokenizer.pad_token_id)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def step_qlora(ctx: Ctx) -> dict:
    """causal_lm with method.quantize=4bit on a small Llama (random weights) over the carried wiki text: trains,
    merges, and the merged model/ loads with plain transformers and gives finite logits. The dry run runs the
    same job with plain LoRA (tunecraft refuses 4-bit on CPU) and reports the step skipped."""
    need_data(ctx)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunecraft.config import build_config
    from tunecraft.train import train

    bnb = None
    if ctx.cuda:
        try:
            import bitsandbytes

            bnb = bitsandbytes.__version__
        except ImportError as err:
            raise RuntimeError(f"bitsandbytes is not importable ({err}); prepare.sh carries its wheel") from None
    elif not ctx.cpu:
        need_cuda(ctx, "QLoRA")
    size = ctx.size["qlora"]
    base = make_decoder(ctx, "qlora-llama", "llama", size["layers"], size["hidden"], 4, size["max_length"])
    lines = ctx.runs / "wiki-lines.txt"  # one document per line: causal_lm's plain-text format
    docs = (ctx.data / "wiki.txt").read_text(encoding="utf-8").split("\n\n")
    lines.write_text("\n".join(" ".join(d.split("\n")) for d in docs if d.strip()) + "\n", encoding="utf-8")
    config = build_config({
        "name": "qlora", "output_dir": str(ctx.runs), "seed": 42, "task": "causal_lm",
        "model": {"base": str(base), "max_length": size["max_length"]},
        "data": {"dataset": None, "train": str(lines), "validation": str(lines), "test": str(lines),
                 "max_train_samples": size["samples"], "max_eval_samples": 8, "sft": {"overlong": "truncate"}},
        "method": {"name": "lora", "r": 8, "alpha": 16, "quantize": "4bit" if ctx.cuda else "none"},
        "train": {"max_steps": size["steps"], "batch_size": size["batch"], "lr": 2e-3,
                  "precision": "bf16" if ctx.cuda else "fp32", "log_every": 1, "eval_each_epoch": False,
                  "tensorboard": False, "progress": False},
        "generation": {"eval_samples": 0, "report_samples": 0}, "baselines": {"zero_shot": False}}, source="qlora")
    device = "cuda" if ctx.cuda else "cpu"
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats()
    summary = train(config, overwrite=True)
    losses = train_losses(config.run_dir)
    model_dir = config.run_dir / "model"
    quantized = "quantization_config" in json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    # a merged 4-bit model is loaded onto the GPU as it loads (it refuses .to())
    merged = AutoModelForCausalLM.from_pretrained(str(model_dir), **({"device_map": {"": 0}} if quantized else {}))
    if not quantized:
        merged.to(device)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tokenizer("The history of the city", return_tensors="pt").to(next(merged.parameters()).device)
    with torch.no_grad():
        logits = merged(**ids).logits
    finite = bool(torch.isfinite(logits.float()).all())
    adapter = (config.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    ok = finite and adapter and all(math.isfinite(x) for x in losses) and summary["steps"] == size["steps"]
    details = {"quantize": config.method.quantize, "bitsandbytes": bnb, "steps": summary["steps"],
               "losses": [round(x, 4) for x in losses], "adapter_saved": adapter, "merged_logits_finite": finite,
               "merged_model_quantized": quantized,
               "test_perplexity": summary["metrics"].get("perplexity"),
               "trainable_params": summary["trainable_params"], "total_params": summary["total_params"]}
    if not ctx.cuda:
        return {"status": "skipped", "reason": "CPU dry run: QLoRA needs CUDA (bitsandbytes' 4-bit kernels; "
                f"tunecraft refuses it on CPU); the same job with plain LoRA {'ran' if ok else 'FAILED'}",
                "rehearsal_ok": ok, **details}
    details["peak_cuda_memory_mb"] = round(torch.cuda.max_memory_allocated() / 1e6, 1)
    return judged(ok, "QLoRA did not train, merge or reload cleanly", **details)


def step_plan(ctx: Ctx) -> dict:
    """`tunecraft plan` against torch.cuda.max_memory_allocated() over the real run of the same recipe (a
    BERT-base-sized full fine-tune), both through the public entry points in this process. The dry run runs both
    at tiny sizes on the CPU and reports the step skipped (no CUDA allocator to read)."""
    need_data(ctx)
    import torch

    from tunecraft.cli import main as tunecraft_cli
    from tunecraft.config import build_config
    from tunecraft.train import train

    if not ctx.cuda and not ctx.cpu:
        need_cuda(ctx, "the planner's CUDA memory reading")
    size, enc = ctx.size["plan"], ctx.size["speed_encoder"]
    base = make_encoder(ctx, "bert-base" if ctx.cuda else "bert-tiny", enc["layers"], enc["hidden"], enc["heads"],
                        enc["max_length"])
    raw = classification_raw(ctx, "plan-real", {
        "model": {"base": str(base), "tokenizer": None, "max_length": size["max_length"], "dropout": None},
        "data": {"max_train_samples": size["samples"]},
        "train": {"max_steps": size["steps"], "batch_size": size["batch"], "precision": "bf16", "lr": 5e-5,
                  "log_every": 10}})
    recipe, plan_json = ctx.runs / "plan.yaml", ctx.runs / "plan.json"
    write_yaml(recipe, raw)
    rc = tunecraft_cli(["plan", str(recipe), "--steps", "3", "--json", str(plan_json)])
    if rc != 0:
        raise RuntimeError(f"tunecraft plan exited with status {rc}")
    chosen = json.loads(plan_json.read_text(encoding="utf-8"))["chosen"]
    keys = ("parameter_bytes", "gradient_bytes", "optimizer_bytes", "activation_bytes")
    parts = sum(chosen[k] for k in keys)
    details = {"plan_peak_mb": round(chosen["peak_bytes"] / 1e6, 1), "plan_parts_sum_mb": round(parts / 1e6, 1),
               "plan_parts_mb": {k: round(chosen[k] / 1e6, 1) for k in keys},
               "plan_tokens_per_s": chosen["tokens_per_second"], "batch": size["batch"], "steps": size["steps"]}
    if ctx.cuda:
        import gc

        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    summary = train(build_config(raw), overwrite=True)
    details["real_tokens_per_s"] = summary["tokens_per_second"]
    if not ctx.cuda:
        return {"status": "skipped", "reason": "CPU dry run: no CUDA allocator peak to compare the plan with; plan "
                "and the real run both ran", **details}
    real = torch.cuda.max_memory_allocated()
    ratio = chosen["peak_bytes"] / real
    ok = PLAN_BAND[0] <= ratio <= PLAN_BAND[1]
    return judged(ok, f"plan's peak is {ratio:.2f} x the real run's (band {PLAN_BAND})",
                  real_max_memory_allocated_mb=round(real / 1e6, 1), peak_ratio=round(ratio, 3),
                  parts_ratio=round(parts / real, 3), band=PLAN_BAND, **details)


# -- speed: tunecraft against a Trainer script, same job, one side after the other ------------------------------

def flops_per_token(config, seq_len: float) -> float:
    """Training FLOPs per token: 6·N (weights in matmuls: the blocks, and a decoder's output projection) +
    12·L·H·T attention (PaLM appendix B; the same count as benchmarks/train_throughput.py)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    inter = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * h
    n = layers * (4 * h * h + 2 * h * inter)
    if config.model_type != "bert":
        n += h * config.vocab_size  # the (tied) output projection is a matmul every token pays
    return 6 * n + 12 * layers * h * seq_len


def speed_side_tunecraft(ctx: Ctx, job: str, folder: Path, train_file: Path) -> dict:
    from tunecraft.config import build_config, load_recipe
    from tunecraft.train import train

    if job == "encoder":
        s = ctx.size["speed_encoder"]
        raw = classification_raw(ctx, "speed-encoder-tunecraft", {
            "model": {"base": str(folder), "tokenizer": None, "max_length": s["max_length"], "dropout": None},
            "data": {"train": str(train_file)},
            "train": {"epochs": 1, "batch_size": s["batch"], "lr": 5e-5, "precision": "bf16", "log_every": 50,
                      "warmup_ratio": 0.06}})
        summary = train(build_config(raw), overwrite=True)
        return {"train_seconds": summary["train_seconds"], "train_tokens": summary["train_tokens"],
                "examples": summary["sizes"]["train"], "padding_fraction": summary["padding_fraction"],
                "device": summary["device"]}
    from tunecraft.pretrain.config import PretrainRecipe
    from tunecraft.pretrain.job import pretrain

    s = ctx.size["speed_decoder"]
    raw = {"name": "speed-decoder-tunecraft", "output_dir": str(ctx.runs), "seed": 42,
           "model": {"base": str(folder), "max_length": s["max_length"]},
           "corpus": {"files": [str(train_file)], "heldout": 0.01},
           "objective": {"name": "clm"},
           "train": {"max_steps": s["steps"], "batch_size": s["batch"], "lr": 3e-4, "precision": "bf16",
                     "log_every": 25, "eval_each_epoch": False, "tensorboard": False, "progress": False,
                     "warmup_ratio": 0.05},
           "mfu_probe": False}
    path = ctx.runs / "speed-decoder.yaml"
    write_yaml(path, raw)
    summary = pretrain(load_recipe(path, [], PretrainRecipe), overwrite=True)
    return {"train_seconds": summary["train_seconds"], "train_tokens": summary["train_tokens"],
            "examples": summary["steps"] * s["batch"], "padding_fraction": 0.0, "device": summary["device"]}


def run_side(ctx: Ctx, side: str, job: str, folder: Path, train_file: Path) -> dict:
    """One side of a speed job. On the GPU each side runs in its own process (its own CUDA context and memory) and
    its RESULT line is parsed; the dry run calls the same functions in this process (a start costs ~15 s there)."""
    s = ctx.size[f"speed_{job}"]
    trainer_args = {"job": job, "model": str(folder), "data": str(train_file), "batch_size": s["batch"],
                    "max_length": s["max_length"], "steps": s.get("steps", 100),
                    "output": str(ctx.runs / f"speed-{job}-trainer"), "cpu": not ctx.cuda}
    start = time.time()
    if ctx.cpu:
        if side == "tunecraft":
            row = speed_side_tunecraft(ctx, job, folder, train_file)
        else:
            from accelerate.state import AcceleratorState

            sys.path.insert(0, str(ROOT / "gpu"))
            import hf_trainer

            AcceleratorState._reset_state(True)  # the Trainer builds its own accelerator after tunecraft's runs
            row = getattr(hf_trainer, job)(argparse.Namespace(**trainer_args))
        row["wall_seconds"] = round(time.time() - start, 1)
        return row
    if side == "tunecraft":
        cmd = [sys.executable, __file__, "_speed_side", job, str(folder), str(train_file)]
    else:
        cmd = [sys.executable, str(ROOT / "gpu" / "hf_trainer.py"), job, str(folder), str(train_file),
               "--batch-size", str(s["batch"]), "--max-length", str(s["max_length"]),
               "--steps", str(trainer_args["steps"]), "--output", trainer_args["output"]]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{side} side of the {job} job failed:\n{proc.stderr[-3000:]}")
    row = json.loads(lines[-1][7:])
    row["wall_seconds"] = round(time.time() - start, 1)
    return row


def step_speed(ctx: Ctx) -> dict:
    """Tokens/s and MFU of tunecraft and of a Trainer script on the same jobs (bf16): a BERT-base-sized encoder
    fine-tuned on mr (one epoch), a GPT-2-small-sized decoder trained as a causal LM on the wiki text. The dry run
    runs both sides at tiny sizes and judges no goal."""
    need_data(ctx)
    from transformers import AutoConfig

    peak_file = ctx.work / "peak.json"
    peak = json.loads(peak_file.read_text(encoding="utf-8"))["flops"] if peak_file.is_file() else None
    enc, dec = ctx.size["speed_encoder"], ctx.size["speed_decoder"]
    train_file = ctx.data / "mr-train.jsonl"
    if enc["samples"]:
        train_file = ctx.runs / "speed-mr-train.jsonl"
        rows = (ctx.data / "mr-train.jsonl").read_text(encoding="utf-8").splitlines()[: enc["samples"]]
        train_file.write_text("\n".join(rows) + "\n", encoding="utf-8")
    folders = {"encoder": (make_encoder(ctx, "bert-base" if ctx.cuda else "bert-tiny", enc["layers"], enc["hidden"],
                                        enc["heads"], enc["max_length"]), train_file),
               "decoder": (make_decoder(ctx, "gpt2-small" if ctx.cuda else "gpt2-tiny", "gpt2", dec["layers"],
                                        dec["hidden"], dec["heads"], dec["max_length"]), ctx.data / "wiki.txt")}
    jobs, goals = {}, {}
    for job, (folder, data) in folders.items():
        config = AutoConfig.from_pretrained(str(folder))
        rows = {side: run_side(ctx, side, job, folder, data) for side in ("tunecraft", "trainer")}
        batch = ctx.size[f"speed_{job}"]["batch"]
        for row in rows.values():
            row["tokens_per_s"] = round(row["train_tokens"] / row["train_seconds"], 1)
            row["tokens_per_step"] = round(row["train_tokens"] / math.ceil(row["examples"] / batch))
            avg_seq = row["train_tokens"] / max(row["examples"], 1)
            row["mfu"] = round(row["tokens_per_s"] * flops_per_token(config, avg_seq) / peak, 4) if peak else None
        ratio = rows["tunecraft"]["tokens_per_s"] / rows["trainer"]["tokens_per_s"]
        jobs[job] = {"model": f"{config.model_type}, {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
                              f"vocab {config.vocab_size} (random weights)",
                     "batch": ctx.size[f"speed_{job}"]["batch"], "max_length": ctx.size[f"speed_{job}"]["max_length"],
                     "sides": rows, "throughput_ratio": round(ratio, 3)}
        goals[f"{job}_throughput_ratio_ge_{GOALS['throughput_ratio']}"] = ratio >= GOALS["throughput_ratio"]
        if job == "encoder":  # kept should the decoder job outrun the step's time box
            write_step(ctx, "speed", {"status": "failed", "reason": "the decoder job did not finish (the encoder's "
                                      "results are kept)", "jobs": jobs})
    goals["encoder_mfu_ge_40pct"] = bool(peak and jobs["encoder"]["sides"]["tunecraft"]["mfu"] >= GOALS["encoder_mfu"])
    details = {"jobs": jobs, "bf16_matmul_peak_tflops": round(peak / 1e12, 2) if peak else None}
    if ctx.cuda:
        details["goals_met"] = goals
    else:
        details["goals_met"] = "not judged: CPU dry run (tiny sizes)"
    return passed(**details)


def step_serving(ctx: Ctx) -> dict:
    raise Skip(SERVING_REASON)


STEPS = {"data": step_data, "env": step_env, "precision": step_precision, "accumulation": step_accumulation,
         "resume": step_resume, "fsdp": step_fsdp, "qlora": step_qlora, "plan": step_plan, "speed": step_speed,
         "serving": step_serving}


# -- driver -------------------------------------------------------------------------------------------------------

def write_step(ctx: Ctx, name: str, result: dict) -> None:
    path = ctx.steps / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


def line(name: str, result: dict) -> str:
    status = result.get("status", "failed")
    why = result.get("reason") or result.get("error", "").splitlines()[0] if status != "passed" else ""
    seconds = f" [{result['seconds']:.0f} s]" if isinstance(result.get("seconds"), int | float) else ""
    return f"{name}: {status}{f' ({why})' if why else ''}{seconds}"


CUDA_STEPS = {"precision", "accumulation", "resume", "fsdp", "qlora", "plan", "speed"}


def run_step(name: str) -> int:
    ctx = Ctx()
    start = time.time()
    try:
        if name in CUDA_STEPS and not ctx.cpu:  # a GPU run without a GPU: say so at once, not after CPU work
            need_cuda(ctx, f"the {name} step")
        result = STEPS[name](ctx)
    except Skip as why:
        result = {"status": "skipped", "reason": str(why)}
    except Exception as err:
        result = {"status": "failed", "error": f"{type(err).__name__}: {err}",
                  "traceback": traceback.format_exc()[-4000:]}
        partial = ctx.steps / f"{name}.json"  # what the step saved of itself before it failed (speed)
        if partial.is_file():
            result["partial"] = json.loads(partial.read_text(encoding="utf-8"))
    result["seconds"] = round(time.time() - start, 1)
    write_step(ctx, name, result)
    print(line(name, result), flush=True)
    return 0


class StepTimeout(BaseException):
    """A step's time box ran out (BaseException: the step's own `except Exception` must not swallow it)."""


def run_all(items: list[str]) -> int:
    """The dry run: every step in this one process (each process start costs ~15 s on a busy CPU), each still
    time-boxed (SIGALRM) and written as its own JSON; one thread, as the CPU is shared."""
    import signal

    import torch

    torch.set_num_threads(1)

    def expire(signum, frame):
        raise StepTimeout

    signal.signal(signal.SIGALRM, expire)
    for item in items:
        name, _, limit = item.partition(":")
        signal.alarm(int(limit or 0))
        try:
            run_step(name)
        except StepTimeout:
            record(name, "failed", f"timed out after {limit}s")
        finally:
            signal.alarm(0)
    return 0


def show(name: str) -> int:
    path = Ctx().steps / f"{name}.json"
    if path.is_file():
        print(line(name, json.loads(path.read_text(encoding="utf-8"))))
    return 0


def record(name: str, status: str, reason: str) -> int:
    """A step's result written from the shell: install, and a step that timed out or crashed."""
    ctx = Ctx()
    if (ctx.steps / f"{name}.json").is_file() and status == "failed":
        return 0  # the step wrote its own result before it ended
    result = {"status": status, "reason": reason}
    write_step(ctx, name, result)
    print(line(name, result), flush=True)
    return 0


def summary(order: list[str], started: float | None) -> int:
    ctx = Ctx()
    steps = {}
    for name in order:
        path = ctx.steps / f"{name}.json"
        steps[name] = (json.loads(path.read_text(encoding="utf-8")) if path.is_file()
                       else {"status": "failed", "reason": "no result written"})
    counts = {s: sum(r["status"] == s for r in steps.values()) for s in ("passed", "failed", "skipped")}
    result = {"check": "tunecraft GPU proof (gpu/check.sh)", "mode": ctx.mode,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "seconds": round(time.time() - started, 1) if started else None,
              "status": "failed" if counts["failed"] else "passed", "counts": counts,
              "versions": steps.get("env", {}).get("versions") or _safe_versions(),
              "tolerances": {"precision": TOLERANCES, "exact": EXACT, "plan_band": PLAN_BAND, "goals": GOALS},
              "steps": steps}
    ctx.out.mkdir(parents=True, exist_ok=True)
    (ctx.out / "summary.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    print("\n== tunecraft GPU check: summary ==")
    for name in order:
        print(line(name, steps[name]))
    print(f"overall: {result['status']} ({counts['passed']} passed, {counts['failed']} failed, "
          f"{counts['skipped']} skipped) in {result['seconds']} s; {ctx.out / 'summary.json'}")
    return 0


def _safe_versions() -> dict:
    try:
        return versions()
    except Exception as err:
        return {"error": str(err)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step")
    parser.add_argument("args", nargs="*")
    parser.add_argument("--started", type=float)
    args = parser.parse_args()
    if args.step in STEPS:
        return run_step(args.step)
    if args.step == "record":
        return record(*args.args)
    if args.step == "run-all":
        return run_all(args.args)
    if args.step == "show":
        return show(args.args[0])
    if args.step == "summary":
        return summary(args.args, args.started)
    if args.step == "export-data":  # prepare.sh: the carried data folder
        print(json.dumps(export_data(Path(args.args[0]), None, 8000), indent=2))
        return 0
    if args.step == "_precision_ref":  # the fp32 CPU reference, in a process that sees no GPU
        ctx = Ctx()
        Path(args.args[0]).write_text(json.dumps(precision_losses(ctx, "fp32", "cpu-fp32")), encoding="utf-8")
        return 0
    if args.step == "_speed_side":
        row = speed_side_tunecraft(Ctx(), args.args[0], Path(args.args[1]), Path(args.args[2]))
        print("RESULT " + json.dumps(row), flush=True)
        return 0
    parser.error(f"unknown step {args.step!r}; steps: {', '.join(STEPS)}, record, summary, export-data")
    return 2


if __name__ == "__main__":
    sys.exit(main())
