"""`tunecraft pretrain`: corpus → tokenizer + model (scratch size or existing model) → the training loop with a
pre-training objective → held-out perplexity → run folder whose model/ `tunecraft train` takes as model.base."""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import torch
import transformers
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..models import SCRATCH, load_tokenizer, resolve_base
from ..report import fmt, line_plot, plot_curves, write_pages
from ..train.loop import TrainingLoop
from ..train.session import RunSession
from .config import PretrainRecipe
from .corpora import load_corpus, sentences
from .objectives import OBJECTIVES


def measure_peak_flops(dtype: torch.dtype | None, device: torch.device | None = None, n: int = 1024,
                       repeats: int = 5) -> float:
    """The device's matmul FLOP/s in the training dtype (bf16 where used), from a short n³ probe."""
    dtype, device = dtype or torch.float32, device or torch.device("cpu")
    if device.type == "cuda":
        n = 8192  # large enough to fill the GPU
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def flops_per_token(model, seq_len: float) -> float:
    """Training FLOPs per token ≈ 6·N + 12·L·H·T (PaLM appendix B): N counts every weight that takes part in a
    matmul (position and segment embeddings are lookups only; a tied output projection counts once)."""
    cfg = model.config
    lookups = sum(p.numel() for n, p in model.named_parameters() if "position_embeddings" in n
                  or "token_type_embeddings" in n)
    params = sum(p.numel() for p in model.parameters()) - lookups
    return 6 * params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


class PretrainLoop(TrainingLoop):
    """The training loop with model FLOP/s and MFU in each train log, and every log line on the terminal."""

    def __init__(self, *args, flops_token: float, peak: float | None):
        super().__init__(*args)
        self.flops_token, self.peak = flops_token, peak

    def log(self, record: dict) -> None:
        if record["type"] == "train":
            record["model_flops_per_s"] = record["tokens_per_s"] * self.flops_token
            if self.peak:
                record["mfu"] = record["model_flops_per_s"] / self.peak
        super().log(record)
        if self.acc.is_main_process:
            shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in record.items()
                     if k in ("step", "loss", "perplexity", "accuracy", "tokens_per_s", "mfu", "pair_accuracy")}
            tqdm.write(f"[{record['type']}] " + "  ".join(f"{k} {v}" for k, v in shown.items()))


def build_model(recipe: PretrainRecipe, train_docs):
    """(tokenizer, model): a scratch size with its tokenizer, or an existing model with an MLM head added."""
    from ..models.sizes import DECODER_SIZES, ENCODER_SIZES, char_tokenizer, decoder_config, encoder_config

    m, objective = recipe.model, recipe.objective
    head = (transformers.BertForPreTraining if objective.sentence_pair else transformers.AutoModelForMaskedLM)
    if not m.base.startswith(SCRATCH):
        if m.tokenizer:
            raise ConfigError(f"model.tokenizer: an existing base ({m.base}) brings its own tokenizer")
        path = resolve_base(m.base)
        cls = transformers.AutoModelForCausalLM if objective.name == "clm" else head
        return load_tokenizer(path), cls.from_pretrained(str(path))  # a missing head starts fresh
    size = m.base[len(SCRATCH):]
    sizes = DECODER_SIZES if objective.name == "clm" else ENCODER_SIZES
    if size not in sizes:
        raise ConfigError(f"model.base: '{size}' is not a size for objective {objective.name}; sizes: "
                          f"{', '.join(sizes)}")
    if m.tokenizer == "chars":
        tokenizer = char_tokenizer(sentences(train_docs))
    elif m.tokenizer and Path(m.tokenizer).is_dir():
        tokenizer = load_tokenizer(Path(m.tokenizer))
    else:
        raise ConfigError(f"model.tokenizer: a scratch model needs 'chars' or a tokenizer folder (from "
                          f"`tunecraft tokenizer`), got {m.tokenizer!r}")
    if objective.name == "clm":
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(eos)
        config = decoder_config(size, len(tokenizer), m.max_length, tokenizer.bos_token_id or eos, eos,
                                tokenizer.pad_token_id)
        return tokenizer, transformers.LlamaForCausalLM(config)
    if tokenizer.mask_token_id is None:
        raise ConfigError(f"model.tokenizer: {m.tokenizer} has no mask token; masked LM needs one (wordpiece/chars)")
    config = encoder_config(size, len(tokenizer), m.max_length)
    return tokenizer, head.from_config(config)


def unigram_baseline(train_ids: list[list[int]], held_ids: list[list[int]], vocab_size: int) -> dict:
    """Perplexity of a unigram model (add-one smoothed token frequencies of the training blocks) on the same
    held-out targets the causal LM predicts (every token but each block's first)."""
    counts = Counter(t for ids in train_ids for t in ids)
    total = sum(counts.values()) + vocab_size
    nll, n = 0.0, 0
    for ids in held_ids:
        for t in ids[1:]:
            nll -= math.log((counts.get(t, 0) + 1) / total)
            n += 1
    return {"loss": nll / max(n, 1), "perplexity": math.exp(nll / max(n, 1)), "tokens": n}


@torch.no_grad()
def generate_samples(model, tokenizer, prompts: list[str], max_new_tokens: int = 40, seed: int = 0) -> list[dict]:
    model.eval()
    out = []
    for prompt in prompts:
        torch.manual_seed(seed)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=True, top_k=40, temperature=0.8,
                             pad_token_id=tokenizer.pad_token_id)
        out.append({"prompt": prompt, "text": tokenizer.decode(gen[0], skip_special_tokens=True)})
    return out


def pretrain(recipe: PretrainRecipe, resume: bool = False, overwrite: bool = False, plugins=()) -> dict:
    """Pre-train as the recipe says; returns the run summary (also in summary.json). `plugins`
    (tunecraft/plugins.py) reach into each step, as in `tunecraft.train`."""
    session = RunSession(recipe, resume, overwrite)  # refuses a run folder it would lose; seed, threads, precision
    train_docs, held_docs = load_corpus(recipe.corpus)
    tokenizer, model = build_model(recipe, train_docs)
    objective = OBJECTIVES[recipe.objective.name](tokenizer, recipe.objective, recipe.seed)
    train_enc = objective.encode(tokenizer, train_docs, recipe.model.max_length, recipe.seed)
    held_enc = objective.encode(tokenizer, held_docs, recipe.model.max_length, recipe.seed + 1) if held_docs else None
    if not len(train_enc):
        raise ConfigError("corpus: too little text for one training sequence")

    steps = session.start(model, train_enc.lengths)  # the first write
    mean_len = sum(train_enc.lengths) / len(train_enc)
    peak = measure_peak_flops(session.dtype, session.acc.device) if recipe.mfu_probe else None
    fpt = flops_per_token(model, mean_len)
    if session.acc.is_main_process:
        print(f"pretrain {recipe.name}: {len(train_enc):,} sequences (mean {mean_len:.1f} tokens), {steps} steps, "
              f"{sum(p.numel() for p in model.parameters()):,} parameters, {fpt / 1e6:.1f} MFLOP/token"
              + (f", matmul peak {peak / 1e9:.0f} GFLOP/s ({session.dtype or torch.float32})" if peak else ""))
    loop = session.loop(model, objective, train_enc, held_enc, None, tokenizer.pad_token_id, plugins,
                        loop_class=PretrainLoop, flops_token=fpt, peak=peak)
    loop.run(resume=resume)
    session.restore_best(loop)

    plain = session.acc.unwrap_model(loop.model)
    final = loop.evaluate(held_enc) if held_enc is not None and len(held_enc) else {}
    causal = recipe.objective.name == "clm"
    baseline = unigram_baseline(train_enc.input_ids, held_enc.input_ids, len(tokenizer)) if causal and final else None
    trains = [h for h in loop.state.history if h["type"] == "train"]
    summary = {
        "name": recipe.name, "objective": recipe.objective.model_dump(), "base_model": recipe.model.base,
        "corpus": {"sources": recipe.corpus.sources, "files": recipe.corpus.files,
                   "train_documents": len(train_docs), "heldout_documents": len(held_docs),
                   "train_sequences": len(train_enc), "heldout_sequences": len(held_enc) if held_enc else 0},
        "vocab_size": len(tokenizer), "total_params": sum(p.numel() for p in plain.parameters()),
        "heldout": final, "unigram_baseline": baseline,
        "samples": generate_samples(plain, tokenizer, recipe.prompts) if causal else [],
        "flops_per_token": fpt, "peak_flops": peak, "mfu": (trains[-1].get("mfu") if trains else None),
        **session.run_summary(loop),
    }
    meta = {"task": f"pretrain:{recipe.objective.name}", "max_length": recipe.model.max_length,
            "base_model": recipe.model.base}
    return session.close(summary, lambda tmp: plain.save_pretrained(tmp["model"]), ("model",),
                         lambda s: write_pretrain_report(session.run_dir, s, loop.state.history), tokenizer, meta)


def write_pretrain_report(run_dir: Path, summary: dict, history: list[dict]) -> Path:
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    images = plot_curves(history, plots, ("accuracy", "pair_accuracy"))
    evals = [h for h in history if h["type"] == "eval"]
    if evals:
        images.append(line_plot([("held-out perplexity", evals, "perplexity", "o-")], "perplexity",
                                 plots / "perplexity.png"))
    held = summary["heldout"]
    rows = [("held-out loss", fmt(held.get("loss"))), ("held-out perplexity", fmt(held.get("perplexity"))),
            ("held-out token accuracy", fmt(held.get("accuracy")))]
    if "pair_accuracy" in held:
        rows.append(("held-out sentence-pair accuracy", fmt(held["pair_accuracy"])))
    if summary["unigram_baseline"]:
        rows.append(("unigram baseline perplexity (same tokenizer)", fmt(summary["unigram_baseline"]["perplexity"])))
    rows += [("parameters", f"{summary['total_params']:,}"), ("steps", summary["steps"]),
             ("training tokens", f"{summary['train_tokens']:,}"), ("tokens/s", summary["tokens_per_second"]),
             ("MFU (last log)", fmt(summary["mfu"])), ("train seconds", summary["train_seconds"]),
             ("wall seconds", summary["wall_seconds"])]
    curve = [(e["step"], fmt(e["loss"]), fmt(e["perplexity"]), fmt(e["accuracy"])) for e in evals]
    sections = [("Result", [("table", ["", "value"], rows)]),
                ("Held-out curve", [("table", ["step", "loss", "perplexity", "accuracy"], curve),
                                    *(("image", p) for p in images)])]
    if summary["samples"]:
        sections.append(("Samples", [("table", ["prompt", "generated"],
                                      [(s["prompt"], s["text"].replace("\n", " ")) for s in summary["samples"]])]))
    title = f"{summary['name']}: {summary['objective']['name']} pre-training of {summary['base_model']}"
    return write_pages(run_dir, title, sections)
