"""The command line: a thin layer over tunecraft's Python functions.

Recipe commands take `RECIPE [key=value ...]` (the recipe's own settings classes validate them); the options
of `serve` and `compress` are generated from their settings classes (`settings.add_options`), so each
default and doc lives once, beside its field."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .errors import TunecraftError
from .settings import add_options, from_args


def _cmd_train(args) -> int:
    from .config import load_config
    from .experiment import experiment
    from .tasks import build_task

    config = load_config(args.recipe, args.overrides)
    if args.no_progress:
        config.train.progress = False
    summary = experiment(config, resume=args.resume, overwrite=args.overwrite)
    if os.environ.get("RANK", "0") != "0":  # under accelerate launch: process 0 prints
        return 0
    m, unit = summary.get("metrics") or {}, summary.get("unit", "tokens")
    print(f"\n{summary['name']}: {summary['method']} on {summary['base_model']}, "
          f"{summary['trainable_params']:,} trainable parameters, {summary['steps']} steps, "
          f"{summary['train_seconds']:.0f} s training ({summary[unit + '_per_second']:.0f} {unit}/s)")
    if m:
        print("\n".join(result_lines(summary, build_task(summary["task"]))))
    if summary.get("doctor"):
        from .evaluate.doctor import format_findings

        print("\n".join(format_findings(summary["doctor"])))
    print(f"report: {summary.get('report')}")
    return 0


def _cmd_doctor(args) -> int:
    from .diagnose import doctor
    from .evaluate.doctor import format_findings

    result = doctor(args.recipe, args.overrides)
    print(f"{result['kind']} {result['target']}")
    print("\n".join(format_findings(result["findings"])))
    return 1 if any(f["severity"] == "warn" for f in result["findings"]) else 0


def result_lines(summary: dict, task) -> list[str]:
    """The held-out metrics, each bar baseline's (TF-IDF + LinearSVC) beside them, and a "below baseline"
    line for each one the fine-tuned result falls short of."""
    from .evaluate.baselines import below_baseline
    from .evaluate.views import view_of

    m, baselines, view = summary["metrics"], summary.get("baselines") or [], view_of(task.NAME)
    lines = [f"{summary['eval_split']}: {view.summary_line(m)}"]
    lines += [f"baseline {b['name']}: {view.summary_line(b['metrics'])}" for b in baselines if b.get("bar")]
    return lines + below_baseline(m, baselines, task.HEADLINE)


def _cmd_plan(args) -> int:
    import json

    from .config import dump_config, load_config
    from .io import write_text
    from .train.plan import format_plan, parse_bytes, plan

    config = load_config(args.recipe, args.overrides)
    budget = parse_bytes(args.memory_budget) if args.memory_budget else None
    result = plan(config, steps=args.steps, memory_budget=budget, auto=args.auto, processes=args.processes)
    print(format_plan(result))
    chosen = result.pop("config", None)
    if args.out and chosen is not None:
        write_text(Path(args.out), dump_config(chosen))
        print(f"planned recipe: {args.out}")
    if args.json:
        write_text(Path(args.json), json.dumps(result, indent=2))
    return 0 if result["fits"] else 1


def _cmd_tune(args) -> int:
    import yaml

    from .config import TuneConfig, load_config
    from .errors import ConfigError
    from .extras import require

    require("tune")
    from .tune import tune

    config = load_config(args.recipe, args.overrides)
    space = None
    if args.space:
        try:
            raw = yaml.safe_load(Path(args.space).read_text(encoding="utf-8")) or {}
            space = TuneConfig.model_validate(raw.get("tune", raw))
        except (OSError, yaml.YAMLError, ValueError) as err:
            raise ConfigError(f"--space {args.space}: {err}") from None
    if space is not None and args.trials:
        space.trials = args.trials
    elif args.trials and config.tune is not None:
        config.tune.trials = args.trials
    if args.no_progress:
        config.train.progress = False
    result = tune(config, space, overwrite=args.overwrite)
    print(f"\n{result['complete']} trials complete, {result['pruned']} pruned; best: trial {result['best_trial']}, "
          f"validation {result['metric']} {result['best_value']:.4f}")
    print("  ".join(f"{k}={v}" for k, v in result["best_params"].items()))
    print(f"results: {result['results']}\nbest recipe: {result['best_recipe']}")
    return 0


def _cmd_tokenizer(args) -> int:
    from .config import load_recipe
    from .pretrain.config import TokenizerRecipe
    from .pretrain.tokenizer import train_tokenizer

    result = train_tokenizer(load_recipe(args.recipe, args.overrides, TokenizerRecipe), overwrite=args.overwrite)
    held = result["heldout"]
    print(f"{result['name']}: {result['kind']} tokenizer, vocabulary {result['vocab_size']:,}; held-out "
          f"({held['sentences']:,} sentences): unknown rate {held['unk_rate']:.4%}, "
          f"{held['tokens_per_sentence']:.1f} tokens/sentence, {held['chars_per_token']:.2f} characters/token")
    print(f"tokenizer: {result['path']}")
    return 0


def _cmd_pretrain(args) -> int:
    from .config import load_recipe
    from .pretrain.config import PretrainRecipe
    from .pretrain.job import pretrain

    recipe = load_recipe(args.recipe, args.overrides, PretrainRecipe)
    if args.no_progress:
        recipe.train.progress = False
    summary = pretrain(recipe, resume=args.resume, overwrite=args.overwrite)
    held = summary["heldout"]
    print(f"\n{summary['name']}: {summary['steps']} steps, {summary['train_seconds']:.0f} s training "
          f"({summary['tokens_per_second']:.0f} tokens/s, MFU {summary['mfu'] or 0:.2%})")
    if held:
        print(f"held-out: loss {held['loss']:.4f}  perplexity {held['perplexity']:.2f}  "
              f"token accuracy {held['accuracy']:.4f}")
    if summary["unigram_baseline"]:
        print(f"unigram baseline (same tokenizer): perplexity {summary['unigram_baseline']['perplexity']:.2f}")
    print(f"model: {summary['report'].rsplit('/', 1)[0]}/model  report: {summary['report']}")
    return 0


def _cmd_continual(args) -> int:
    from .continual import load_continual, run_continual
    from .continual.report import COMPARISON_HEADER, comparison_rows

    config = load_continual(args.recipe, args.overrides)
    if args.no_progress:
        config.train.progress = False
    results = run_continual(config, overwrite=args.overwrite)
    print("\n" + "  ".join(COMPARISON_HEADER[:4]))
    for row in comparison_rows(results):
        print("  ".join(str(c) for c in row[:4]))
    print(f"report: {results['report']}")
    return 0


def _cmd_eval(args) -> int:
    from .evaluate.runs import evaluate_run
    from .evaluate.views import view_of

    result = evaluate_run(args.run, args.data, split=args.split, fmt=args.format)
    print(f"{args.data}: {view_of(result['task']).summary_line(result['metrics'])}")
    print(f"report: {result['report']}")
    return 0


def _cmd_predict(args) -> int:
    from .evaluate.runs import format_predictions, predict, read_texts

    texts = list(args.texts)
    if args.file:
        texts += read_texts(args.file, args.text_column)
    if not texts:
        raise TunecraftError("give texts as arguments or --file FILE")
    from .runs import run_task

    print(format_predictions(predict(args.run, texts, precision=args.precision), args.json, run_task(args.run)))
    return 0


def _cmd_chat(args) -> int:
    from .chat import chat_of
    from .trained import load_trained

    trained = load_trained(args.run)
    chat = chat_of(trained.meta["task"])
    for key in ("max_new_tokens", "temperature", "top_p"):
        if getattr(args, key) is not None:
            trained.meta["generation"][key] = getattr(args, key)
    interactive = sys.stdin.isatty()
    if interactive:
        print("chat with the model: /reset clears the history, /exit (or Ctrl-D) ends")

    def lines():
        while True:
            if interactive:
                print("> ", end="", flush=True)
            line = sys.stdin.readline()
            if not line:
                return
            yield line

    chat(trained, lines(), lambda text: print(text, flush=True), system=args.system)
    return 0


def _cmd_robustness(args) -> int:
    from .evaluate.robustness import robustness

    result = robustness(args.run, ood=args.ood, perturbations=args.perturbations, seed=args.seed,
                        max_examples=args.max_examples)
    print(f"clean test split ({result['clean']['samples']} examples): accuracy {result['clean']['accuracy']:.4f}")
    for kind, rows in (("out of domain", result["ood"]), ("perturbed", result["perturbations"])):
        for name, r in rows.items():
            if r["accuracy"] is None:
                print(f"{kind} {name}: no example applies")
                continue
            print(f"{kind} {name} ({r['samples']} examples): accuracy {r['accuracy']:.4f}  drop {r['drop']:+.4f}")
    print(f"expected calibration error: {result['calibration']['ece']:.4f}")
    print(f"report: {result.get('report', result['markdown'])}")
    return 0


def _cmd_explain(args) -> int:
    from .evaluate.explain import explain, to_terminal

    attr, path = explain(args.run, args.text, target=args.target, steps=args.steps, html_path=args.html)
    print(to_terminal(attr, color=not args.no_color and sys.stdout.isatty()))
    print(f"html: {path}")
    return 0


def _named_runs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, run = pair.partition("=")
        if not sep or not name or not run:
            raise TunecraftError(f"--lora {pair}: give NAME=RUN")
        out[name] = run
    return out


def _cmd_serve(args) -> int:
    from .extras import require

    require("serve")
    from .serve.app import serve
    from .serve.settings import ServeSettings

    key = args.api_key or os.environ.get("TUNECRAFT_API_KEY") or None
    serve(from_args(ServeSettings, args, api_key=key, lora=_named_runs(args.lora_runs)))
    return 0


def _cmd_studio(args) -> int:
    from .studio.settings import StudioSettings

    settings = from_args(StudioSettings, args, api_key=args.api_key or os.environ.get("TUNECRAFT_API_KEY") or None)
    from .extras import require

    require("studio")
    from .studio.app import studio

    studio(settings)
    return 0


def _cmd_compress(args) -> int:
    from .compress.settings import Options

    options = from_args(Options, args)  # checked before the jobs (and torch) are imported
    from .extras import require

    require("compress")
    from .compress.job import compress

    result = compress(args.run, args.variants, out=args.out, options=options, measure=not args.no_bench,
                      overwrite=args.overwrite, progress=not args.no_progress)
    for name, folder in result["folders"].items():
        print(f"{name}: {folder}")
    if "measured" in result:
        print("\n" + result["table"])
        print(f"report: {result['report']}")
    return 0


def _cmd_export(args) -> int:
    from .export.settings import ExportSettings

    settings = from_args(ExportSettings, args)  # checked before the writers (and torch) are imported
    from .export.job import export

    result = export(args.run, args.target, out=args.out, settings=settings, overwrite=args.overwrite)
    print(f"{result['target']}: {result['folder']}")
    if "check" in result:
        c = result["check"]
        print(f"check: {c['same_answers']} of {c['prompts']} greedy answers the same as the run's")
    print(f"serve it: {result['command']}")
    return 0


def _cmd_assets(args) -> int:
    from . import assets

    if args.action == "fetch":
        for line in assets.fetch():
            print(line)
    else:
        from .data.bundled import LANGUAGE
        from .data.chat import BUNDLED_CHAT

        print("models:   " + ", ".join([*assets.MODELS, *assets.GGUF_MODELS]))
        print("datasets: " + ", ".join([*LANGUAGE, "pd-ner", *BUNDLED_CHAT]))
        print(f"asset folder: {assets.home()}")
    return 0


def _cmd_report(args) -> int:
    from .evaluate.compare import compare_runs
    from .runs import CONFIG, SUMMARY, RunFolder

    # a glob such as runs/* also catches earlier report folders: skip what is not a run folder, unless
    # nothing else is left (then compare_runs says what is wrong with the first)
    runs = [r for r in args.runs if RunFolder(r).is_run()]
    for skipped in (r for r in args.runs if runs and r not in runs):
        if not (args.out and Path(skipped).resolve() == Path(args.out).resolve()):
            print(f"note: skipping {skipped} (not a run folder: no {SUMMARY} or {CONFIG})", file=sys.stderr)
    result = compare_runs(runs or args.runs, args.out)
    print(result["markdown"], end="")
    for path in result.get("files", []):
        print(f"wrote {path}")
    return 0


class CommandParser(argparse.ArgumentParser):
    """A command's parser: options may come anywhere among the positionals (`predict RUN --json TEXT`), and
    `build` adds the options when the command runs, so that a command whose options come from a settings
    class imports that class (and torch behind it) only when it is the one asked for."""

    def __init__(self, *args, build=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._build, self._intermixed = build, False

    def parse_known_args(self, args=None, namespace=None):
        if self._build is not None:
            build, self._build = self._build, None
            build(self)
        if self._intermixed:  # argparse's intermixed parsing calls back into this method
            return super().parse_known_args(args, namespace)
        self._intermixed = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixed = False


def recipe_command(sub, name: str, func, example: str, *, resume: bool = False, overwrite: str | None = None,
                   progress: bool = True, **parser_kwargs) -> argparse.ArgumentParser:
    """A subcommand that takes a recipe and dotted.key=value overrides (train, plan, tune, tokenizer, ...)."""
    p = sub.add_parser(name, **parser_kwargs)
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help=f"dotted.key=value, e.g. {example}")
    if resume:
        p.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    if overwrite:
        p.add_argument("--overwrite", action="store_true", help=f"replace an existing {overwrite}")
    if progress:
        p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=func)
    return p


def _serve_options(p: argparse.ArgumentParser) -> None:
    from .serve.settings import ServeSettings

    add_options(p, ServeSettings, skip=("lora",))
    p.add_argument("--lora", dest="lora_runs", action="append", default=[], metavar="NAME=RUN",
                   help=ServeSettings.model_fields["lora"].description)


def _studio_options(p: argparse.ArgumentParser) -> None:
    from .studio.settings import StudioSettings

    add_options(p, StudioSettings)


def _compress_options(p: argparse.ArgumentParser) -> None:
    from .compress.settings import Options

    p.add_argument("run", help="a fine-tuned classification or causal_lm run folder")
    p.add_argument("variants", nargs="+", help="e.g. int8 onnx distill-3l prune-50 (or all); causal_lm runs: int8 "
                                               "int4 gguf-f16 gguf-q8_0 gguf-q4_0 (or all)")
    p.add_argument("--out", help="folder for the variants and the report (default: RUN/compressed)")
    add_options(p, Options)
    p.add_argument("--no-bench", action="store_true", help="make the variants, skip the measurements")
    p.add_argument("--overwrite", action="store_true", help="replace existing variant folders")
    p.add_argument("--no-progress", action="store_true")


def _export_options(p: argparse.ArgumentParser) -> None:
    from .export.settings import TARGETS, ExportSettings

    p.add_argument("run", help="a causal_lm run folder")
    p.add_argument("--for", dest="target", required=True, choices=TARGETS,
                   help="hf: merged HF folder; vllm: base + LoRA adapter (or merged); ollama: GGUF + Modelfile; "
                        "gguf: the GGUF file alone (llama.cpp)")
    p.add_argument("--out", help="the folder to write (default: RUN/export/<target>)")
    add_options(p, ExportSettings)
    p.add_argument("--overwrite", action="store_true", help="replace an existing export folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunecraft", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)

    recipe_command(sub, "train", _cmd_train, "train.lr=3e-4 method.r=16", resume=True, overwrite="run folder",
                   help="fine-tune and evaluate from a recipe")

    p = recipe_command(sub, "plan", _cmd_plan, "train.batch_size=64", progress=False,
                       help="measure a few real steps: memory split, tokens/s, time per epoch and run",
                       description="Runs 1 + --steps real optimizer steps of the recipe (nothing is saved) and "
                                   "prints parameter/gradient/optimizer/activation memory, tokens/s and the "
                                   "estimated time per epoch and for the run. --auto measures layouts with the "
                                   "recipe's global batch (micro-batch × accumulation, fp32/bf16, gradient "
                                   "checkpointing) and picks the fastest that fits --memory-budget. Exit status "
                                   "1 when the recipe's layout does not fit the budget.")
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps per layout (after one warm-up)")
    p.add_argument("--memory-budget", help="e.g. 4GB, 512MB, 8GiB: the model's peak must fit")
    p.add_argument("--auto", action="store_true", help="choose the layout that fits the budget at the best speed")
    p.add_argument("--processes", type=int, default=1, help="estimate time for N data-parallel processes")
    p.add_argument("--out", help="--auto: write the recipe with the chosen layout here")
    p.add_argument("--json", help="write every measurement as JSON here")

    p = recipe_command(sub, "tune", _cmd_tune, "data.max_train_samples=500", overwrite="search folder",
                       help="hyper-parameter search (Optuna) with pruning; writes the best recipe",
                       description="Searches the recipe's `tune.space` (or --space FILE): each trial is a "
                                   "training run in RUN/trials/; the validation metric is reported after every "
                                   "evaluation and the median pruner stops trailing trials. Writes "
                                   "RUN/results.md, RUN/results.csv and RUN/best.yaml.")
    p.add_argument("--space", help="a YAML file with the search settings (a `tune:` mapping)")
    p.add_argument("--trials", type=int, help="number of trials (overrides tune.trials)")

    recipe_command(sub, "doctor", _cmd_doctor, "data.max_train_samples=500", progress=False,
                   help="check a recipe's data and base model before training, or a run folder's data and outcome",
                   description="RECIPE: label imbalance and tiny classes, train/validation/test overlap (exact and "
                               "near-duplicate), the tokenizer's unknown rate and fertility, truncation. A run "
                               "folder: the same on its data, plus classes never predicted, a result below a "
                               "baseline, a NaN or diverged loss. Each finding says what to do. Exit status 1 "
                               "when there is a warning.")
    recipe_command(sub, "tokenizer", _cmd_tokenizer, "vocab_size=16000", overwrite="tokenizer folder",
                   progress=False, help="train a tokenizer (wordpiece, bpe, chars) from corpora or text files")
    recipe_command(sub, "pretrain", _cmd_pretrain, "train.max_steps=100", resume=True, overwrite="run folder",
                   help="pre-train from scratch or continue pre-training (MLM, NSP/SOP, causal LM)")
    recipe_command(sub, "continual", _cmd_continual, "train.max_steps=30 seed=1", overwrite="continual run folder",
                   help="learn a stream of tasks one after another; measure what is forgotten")

    p = sub.add_parser("eval", help="evaluate a run on a bundled dataset or a file")
    p.add_argument("run")
    p.add_argument("--data", required=True, help="mr, amazon, tweets, nyt, pd-ner, or a CSV/TSV/JSONL/Parquet/"
                                                 "CoNLL file")
    p.add_argument("--split", default="test", choices=["train", "validation", "test", "all"],
                   help="for bundled sets: which seeded split (the run's own seed), or all")
    p.add_argument("--format", default="auto", choices=["auto", "csv", "tsv", "jsonl", "parquet", "conll"],
                   help="auto: from the suffix (for NER runs: .jsonl spans, anything else CoNLL)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="label texts with a run's model (NER runs: entities with character offsets; "
                                       "causal_lm runs: the answer to each prompt; reward_model runs: the reward "
                                       "of each text, or of the answer in 'PROMPT<TAB>ANSWER')")
    p.add_argument("run")
    p.add_argument("texts", nargs="*")
    p.add_argument("--file", help="a .txt file (one text per line) or CSV/TSV/JSONL/Parquet")
    p.add_argument("--text-column", default="text")
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: fp32 for generative runs, else bf16 where the hardware has it, else fp32 "
                        "(as `serve --precision`)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("chat", help="chat with a causal_lm run in the terminal (reads stdin, keeps the history)")
    p.add_argument("run")
    p.add_argument("--system", help="a system message to start the conversation with")
    p.add_argument("--max-new-tokens", type=int, help="default: the recipe's task.generation.max_new_tokens")
    p.add_argument("--temperature", type=float, help="0 is greedy (default: the recipe's)")
    p.add_argument("--top-p", type=float)
    p.set_defaults(func=_cmd_chat)

    p = sub.add_parser("robustness", help="accuracy out of domain, under perturbations, and calibration")
    p.add_argument("run")
    p.add_argument("--ood", nargs="*", default=None,
                   help="out-of-domain sets (bundled names or files); default: the other bundled sentiment sets")
    p.add_argument("--perturbations", nargs="*", default=None,
                   choices=["typos", "casing", "punctuation", "word-drop", "negation"], help="default: all")
    p.add_argument("--seed", type=int, default=0, help="seed of the perturbations")
    p.add_argument("--max-examples", type=int, default=None, help="cap every evaluated set (a seeded sample)")
    p.set_defaults(func=_cmd_robustness)

    p = sub.add_parser("explain", help="token attributions (integrated gradients) for one prediction")
    p.add_argument("run")
    p.add_argument("text")
    p.add_argument("--target", help="attribute toward this label (default: the predicted one)")
    p.add_argument("--steps", type=int, default=50, help="integration steps")
    p.add_argument("--html", help="where to write the HTML (default: RUN/explanations/<hash>.html)")
    p.add_argument("--no-color", action="store_true")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("serve", help="serve a run over HTTP (FastAPI): /v1/classify, /v1/feedback, /health, /metrics",
                       description="A text longer than the model's max_length tokens is cut to it, as `tunecraft "
                                   "predict` cuts it, and its prediction says \"truncated\": true. Bad requests get "
                                   "4xx with a message: docs/serving.md lists them.", build=_serve_options)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("compress", help="distil, prune, quantize or export a run; measure every variant",
                       description="Variants: int8, onnx, onnx-int8-dynamic, onnx-int8-static, distill-<N>l, "
                                   "distill-<N>l-int8, prune-<percent>, heads-<percent>, layers-<N>, all; for "
                                   "causal_lm runs int8, int4 (torchao weight-only), gguf-<type>, all. "
                                   "Each is written to RUN/compressed/<variant>/ (a folder eval, predict and "
                                   "serve accept), then all are measured in one run: RUN/compressed/report.md.",
                       build=_compress_options)
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("export", help="hand a causal-LM run to a serving engine (hf, vllm, ollama, gguf); print the "
                                      "command that serves it",
                       description="Writes RUN/export/<target>/ atomically, loads it back (transformers, peft, "
                                   "transformers' GGUF loader) and compares its greedy answers with the run's on "
                                   "fixed prompts. A request it cannot serve is refused before anything is written.",
                       build=_export_options)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("report", help="compare finished runs in one table (method, parameters, score, time, "
                                      "memory) with their baselines, and a plot")
    p.add_argument("runs", nargs="+", help="run folders (a shell glob such as runs/sweep-* works)")
    p.add_argument("--out", help="also write comparison.md, comparison.csv and comparison.png to this folder")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("studio", help="a local web app over the run folders: runs, comparisons, try it, live training",
                       description="Opens on loopback (http://127.0.0.1:7860 by default); every script and style "
                                   "ships in the package (it works offline). docs/studio.md shows its pages.",
                       build=_studio_options)
    p.set_defaults(func=_cmd_studio)

    p = sub.add_parser("assets", help="fetch or list the bundled models and datasets")
    p.add_argument("action", choices=["fetch", "list"])
    p.set_defaults(func=_cmd_assets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # transformers imports torchao whenever it is installed: on a CPU its GPU kernels (mxfp8, cutlass) fail to load
    # and it warns of each, and torch warns of its enum registrations, on every command: noise for a user, who
    # still sees their errors
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return args.func(args)
    except TunecraftError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
