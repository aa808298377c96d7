"""The command line: a thin layer over tunecraft's Python functions.

Every command's arguments are generated from settings classes through one mechanism (`settings.add_options`):
flag names, types, choices, defaults and help live once, beside each field. A command is one row of `COMMANDS`
(its name, handler, the settings classes of its arguments, its help); to add one:

1. write its settings class: in the module of its job where it has a light settings module (serve, compress,
   export, studio), else in `cli_options.py`; a required field is a positional, `Arg` spells what else differs;
2. write `_cmd_NAME(args)`: `options = from_args(TheClass, args)` (errors name the flag), then call the job;
3. add `Command("NAME", _cmd_NAME, (".module:TheClass",), "one line of help")` to `COMMANDS`.

The classes are imported when their command is the one asked for (CommandParser's `build`), so a command whose
settings sit beside torch-heavy jobs costs the others nothing. Recipe commands take `RECIPE [key=value ...]`;
the recipe's own settings classes validate the overrides."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from . import cli_options as opts
from .errors import TunecraftError
from .settings import add_options, from_args


def _cmd_train(args) -> int:
    from .config import load_config
    from .experiment import experiment
    from .tasks import build_task

    o = from_args(opts.TrainArgs, args)
    config = o.load(load_config)
    summary = experiment(config, resume=o.resume, overwrite=o.overwrite)
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

    o = from_args(opts.DoctorArgs, args)
    result = doctor(o.recipe, o.overrides)
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

    o = from_args(opts.PlanArgs, args)
    config = o.load(load_config)
    budget = parse_bytes(o.memory_budget) if o.memory_budget else None
    result = plan(config, steps=o.steps, memory_budget=budget, auto=o.auto, processes=o.processes)
    print(format_plan(result))
    chosen = result.pop("config", None)
    if o.out and chosen is not None:
        write_text(Path(o.out), dump_config(chosen))
        print(f"planned recipe: {o.out}")
    if o.json_path:
        write_text(Path(o.json_path), json.dumps(result, indent=2))
    return 0 if result["fits"] else 1


def _cmd_tune(args) -> int:
    import yaml

    from .config import TuneConfig, load_config
    from .errors import ConfigError
    from .extras import require

    require("tune")
    from .tune import tune

    o = from_args(opts.TuneArgs, args)
    config = o.load(load_config)
    space = None
    if o.space:
        try:
            raw = yaml.safe_load(Path(o.space).read_text(encoding="utf-8")) or {}
            space = TuneConfig.model_validate(raw.get("tune", raw))
        except (OSError, yaml.YAMLError, ValueError) as err:
            raise ConfigError(f"--space {o.space}: {err}") from None
    if space is not None and o.trials:
        space.trials = o.trials
    elif o.trials and config.tune is not None:
        config.tune.trials = o.trials
    result = tune(config, space, overwrite=o.overwrite)
    print(f"\n{result['complete']} trials complete, {result['pruned']} pruned; best: trial {result['best_trial']}, "
          f"validation {result['metric']} {result['best_value']:.4f}")
    print("  ".join(f"{k}={v}" for k, v in result["best_params"].items()))
    print(f"results: {result['results']}\nbest recipe: {result['best_recipe']}")
    return 0


def _cmd_tokenizer(args) -> int:
    from .config import load_recipe
    from .pretrain.config import TokenizerRecipe
    from .pretrain.tokenizer import train_tokenizer

    o = from_args(opts.TokenizerArgs, args)
    result = train_tokenizer(o.load(partial(load_recipe, cls=TokenizerRecipe)), overwrite=o.overwrite)
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

    o = from_args(opts.PretrainArgs, args)
    recipe = o.load(partial(load_recipe, cls=PretrainRecipe))
    summary = pretrain(recipe, resume=o.resume, overwrite=o.overwrite)
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

    o = from_args(opts.ContinualArgs, args)
    config = o.load(load_continual)
    results = run_continual(config, overwrite=o.overwrite)
    print("\n" + "  ".join(COMPARISON_HEADER[:4]))
    for row in comparison_rows(results):
        print("  ".join(str(c) for c in row[:4]))
    print(f"report: {results['report']}")
    return 0


def _cmd_eval(args) -> int:
    from .evaluate.runs import evaluate_run
    from .evaluate.views import view_of

    o = from_args(opts.EvalArgs, args)
    result = evaluate_run(o.run, o.data, split=o.split, fmt=o.format)
    print(f"{o.data}: {view_of(result['task']).summary_line(result['metrics'])}")
    print(f"report: {result['report']}")
    return 0


def _cmd_predict(args) -> int:
    from .evaluate.runs import format_predictions, predict, read_texts

    o = from_args(opts.PredictArgs, args)
    texts = list(o.texts)
    if o.file:
        texts += read_texts(o.file, o.text_column)
    if not texts:
        raise TunecraftError("give texts as arguments or --file FILE")
    from .runs import run_task

    print(format_predictions(predict(o.run, texts, precision=o.precision), o.as_json, run_task(o.run)))
    return 0


def _cmd_chat(args) -> int:
    from .chat import chat_of
    from .trained import load_trained

    o = from_args(opts.ChatArgs, args)
    trained = load_trained(o.run)
    chat = chat_of(trained.meta["task"])
    for key in ("max_new_tokens", "temperature", "top_p"):
        if getattr(o, key) is not None:
            trained.meta["generation"][key] = getattr(o, key)
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

    chat(trained, lines(), lambda text: print(text, flush=True), system=o.system)
    return 0


def _cmd_robustness(args) -> int:
    from .evaluate.robustness import robustness

    o = from_args(opts.RobustnessArgs, args)
    result = robustness(o.run, ood=o.ood, perturbations=o.perturbations, seed=o.seed, max_examples=o.max_examples)
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

    o = from_args(opts.ExplainArgs, args)
    attr, path = explain(o.run, o.text, target=o.target, steps=o.steps, html_path=o.html)
    print(to_terminal(attr, color=o.color and sys.stdout.isatty()))
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
    serve(from_args(ServeSettings, args, api_key=key, lora=_named_runs(from_args(opts.ServeLoras, args).lora_runs)))
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

    o, options = from_args(opts.CompressArgs, args), from_args(Options, args)  # checked before torch is imported
    from .extras import require

    require("compress")
    from .compress.job import compress

    result = compress(o.run, o.variants, out=o.out, options=options, measure=o.bench, overwrite=o.overwrite,
                      progress=o.progress)
    for name, folder in result["folders"].items():
        print(f"{name}: {folder}")
    if "measured" in result:
        print("\n" + result["table"])
        print(f"report: {result['report']}")
    return 0


def _cmd_export(args) -> int:
    from .export.settings import ExportSettings

    o = from_args(opts.ExportArgs, args)
    settings = from_args(ExportSettings, args)  # checked before the writers (and torch) are imported
    from .export.job import export

    result = export(o.run, o.target, out=o.out, settings=settings, overwrite=o.overwrite)
    print(f"{result['target']}: {result['folder']}")
    if "check" in result:
        c = result["check"]
        print(f"check: {c['same_answers']} of {c['prompts']} greedy answers the same as the run's")
    print(f"serve it: {result['command']}")
    return 0


def _cmd_assets(args) -> int:
    from . import assets

    if from_args(opts.AssetsArgs, args).action == "fetch":
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
    o = from_args(opts.ReportArgs, args)
    runs = [r for r in o.runs if RunFolder(r).is_run()]
    for skipped in (r for r in o.runs if runs and r not in runs):
        if not (o.out and Path(skipped).resolve() == Path(o.out).resolve()):
            print(f"note: skipping {skipped} (not a run folder: no {SUMMARY} or {CONFIG})", file=sys.stderr)
    result = compare_runs(runs or o.runs, o.out)
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


@dataclass(frozen=True)
class Command:
    """One command of the table: its handler, the settings classes its arguments are generated from (in order,
    as "module:Class" under tunecraft, imported only when the command is the one asked for), and its help."""

    name: str
    run: Callable[[argparse.Namespace], int]
    options: tuple[str, ...]
    help: str
    description: str | None = None
    skip: tuple[str, ...] = ()
    """Fields of the classes that the command line does not set (serve's `lora`: ServeLoras spells it)."""

    def add_to(self, sub) -> None:
        def build(parser: argparse.ArgumentParser) -> None:
            for spec in self.options:
                module, _, name = spec.partition(":")
                add_options(parser, getattr(importlib.import_module(module, __package__), name), skip=self.skip)

        parser = sub.add_parser(self.name, help=self.help, description=self.description, build=build)
        parser.set_defaults(func=self.run)


_OPTS = ".cli_options:"
COMMANDS = (
    Command("train", _cmd_train, (_OPTS + "TrainArgs",), "fine-tune and evaluate from a recipe"),
    Command("plan", _cmd_plan, (_OPTS + "PlanArgs",),
            "measure a few real steps: memory split, tokens/s, time per epoch and run",
            "Runs 1 + --steps real optimizer steps of the recipe (nothing is saved) and prints parameter/gradient/"
            "optimizer/activation memory, tokens/s and the estimated time per epoch and for the run. --auto "
            "measures layouts with the recipe's global batch (micro-batch × accumulation, fp32/bf16, gradient "
            "checkpointing) and picks the fastest that fits --memory-budget. Exit status 1 when the recipe's "
            "layout does not fit the budget."),
    Command("tune", _cmd_tune, (_OPTS + "TuneArgs",),
            "hyper-parameter search (Optuna) with pruning; writes the best recipe",
            "Searches the recipe's `tune.space` (or --space FILE): each trial is a training run in RUN/trials/; "
            "the validation metric is reported after every evaluation and the median pruner stops trailing "
            "trials. Writes RUN/results.md, RUN/results.csv and RUN/best.yaml."),
    Command("doctor", _cmd_doctor, (_OPTS + "DoctorArgs",),
            "check a recipe's data and base model before training, or a run folder's data and outcome",
            "RECIPE: label imbalance and tiny classes, train/validation/test overlap (exact and near-duplicate), "
            "the tokenizer's unknown rate and fertility, truncation. A run folder: the same on its data, plus "
            "classes never predicted, a result below a baseline, a NaN or diverged loss. Each finding says what "
            "to do. Exit status 1 when there is a warning."),
    Command("tokenizer", _cmd_tokenizer, (_OPTS + "TokenizerArgs",),
            "train a tokenizer (wordpiece, bpe, chars) from corpora or text files"),
    Command("pretrain", _cmd_pretrain, (_OPTS + "PretrainArgs",),
            "pre-train from scratch or continue pre-training (MLM, NSP/SOP, causal LM)"),
    Command("continual", _cmd_continual, (_OPTS + "ContinualArgs",),
            "learn a stream of tasks one after another; measure what is forgotten"),
    Command("eval", _cmd_eval, (_OPTS + "EvalArgs",), "evaluate a run on a bundled dataset or a file"),
    Command("predict", _cmd_predict, (_OPTS + "PredictArgs",),
            "label texts with a run's model (NER runs: entities with character offsets; causal_lm runs: the answer "
            "to each prompt; reward_model runs: the reward of each text, or of the answer in 'PROMPT<TAB>ANSWER')"),
    Command("chat", _cmd_chat, (_OPTS + "ChatArgs",),
            "chat with a causal_lm run in the terminal (reads stdin, keeps the history)"),
    Command("robustness", _cmd_robustness, (_OPTS + "RobustnessArgs",),
            "accuracy out of domain, under perturbations, and calibration"),
    Command("explain", _cmd_explain, (_OPTS + "ExplainArgs",),
            "token attributions (integrated gradients) for one prediction"),
    Command("serve", _cmd_serve, (".serve.settings:ServeSettings", _OPTS + "ServeLoras"),
            "serve a run over HTTP (FastAPI): /v1/classify, /v1/feedback, /health, /metrics",
            "A text longer than the model's max_length tokens is cut to it, as `tunecraft predict` cuts it, and "
            "its prediction says \"truncated\": true. Bad requests get 4xx with a message: docs/serving.md lists "
            "them.", skip=("lora",)),
    Command("compress", _cmd_compress, (_OPTS + "CompressArgs", ".compress.settings:Options"),
            "distil, prune, quantize or export a run; measure every variant",
            "Variants: int8, onnx, onnx-int8-dynamic, onnx-int8-static, distill-<N>l, distill-<N>l-int8, "
            "prune-<percent>, heads-<percent>, layers-<N>, all; for causal_lm runs int8, int4 (torchao "
            "weight-only), gguf-<type>, all. Each is written to RUN/compressed/<variant>/ (a folder eval, "
            "predict and serve accept), then all are measured in one run: RUN/compressed/report.md."),
    Command("export", _cmd_export, (_OPTS + "ExportArgs", ".export.settings:ExportSettings"),
            "hand a causal-LM run to a serving engine (hf, vllm, ollama, gguf); print the command that serves it",
            "Writes RUN/export/<target>/ atomically, loads it back (transformers, peft, transformers' GGUF "
            "loader) and compares its greedy answers with the run's on fixed prompts. A request it cannot "
            "serve is refused before anything is written."),
    Command("report", _cmd_report, (_OPTS + "ReportArgs",),
            "compare finished runs in one table (method, parameters, score, time, memory) with their baselines, "
            "and a plot"),
    Command("studio", _cmd_studio, (".studio.settings:StudioSettings",),
            "a local web app over the run folders: runs, comparisons, try it, live training",
            "Opens on loopback (http://127.0.0.1:7860 by default); every script and style ships in the package "
            "(it works offline). docs/studio.md shows its pages."),
    Command("assets", _cmd_assets, (_OPTS + "AssetsArgs",), "fetch or list the bundled models and datasets"),
)
"""Every command, in the order `tunecraft --help` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunecraft", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for command in COMMANDS:
        command.add_to(sub)
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
