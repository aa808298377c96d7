"""`tunecraft tune`: hyper-parameter search with Optuna over a recipe's `tune.space`, pruning trials that
trail on the validation metric; writes a results table (markdown + CSV) and the best settings as a recipe."""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import os
import shutil
import time
from pathlib import Path

import yaml

from .config import RunConfig, TuneConfig, apply_overrides, build_config, dump_config
from .errors import ConfigError, TrainingFailed, TunecraftError
from .io import refuse_existing, write_text
from .plugins import AfterStep
from .train import train

logger = logging.getLogger(__name__)

MODEL_FOLDERS = ("model", "adapter", "checkpoints")


def _optuna():
    try:
        import optuna
    except ImportError:
        raise TunecraftError("tunecraft tune needs optuna: pip install 'optuna>=5.0,<5.1'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def recipe_without_tune(config: RunConfig) -> dict:
    raw = yaml.safe_load(dump_config(config))
    raw.pop("tune", None)
    return raw


def with_params(raw: dict, params: dict, source: str) -> RunConfig:
    """The recipe with `params` (dotted key → value) applied; errors name the key."""
    overrides = [f"{key}={json.dumps(value)}" for key, value in params.items()]
    return build_config(apply_overrides(copy.deepcopy(raw), overrides), source=source)


def check_space(config: RunConfig, tune: TuneConfig) -> None:
    if not tune.space:
        raise ConfigError("tune.space is empty: name at least one recipe key to search, e.g. "
                          "train.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}")
    raw = recipe_without_tune(config)
    for key, spec in tune.space.items():
        for value in (spec.choices or [spec.low, spec.high]):
            value = int(value) if spec.type == "int" else value
            with_params(raw, {key: value}, f"tune.space.{key}")
    for i, first in enumerate(tune.first):
        unknown = sorted(set(first) - set(tune.space))
        if unknown:
            raise ConfigError(f"tune.first[{i}]: {', '.join(unknown)} not in tune.space")
        with_params(raw, first, f"tune.first[{i}]")


def suggest(trial, tune: TuneConfig) -> dict:
    params = {}
    for key, spec in tune.space.items():
        if spec.type == "categorical":
            params[key] = trial.suggest_categorical(key, spec.choices)
        elif spec.type == "int":
            params[key] = trial.suggest_int(key, int(spec.low), int(spec.high), step=int(spec.step or 1),
                                            log=spec.log)
        else:
            params[key] = trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)
    return params


class PruneReporter:
    """A training-loop hook: hands each new validation evaluation to the trial (step = its evaluation number,
    1 = the first) and stops the run when the pruner says so. Hooks run after optimizer steps, so an
    evaluation at an epoch's end is judged at the next step."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric, self.reported, self.last = trial, metric, 0, None

    def report(self, history: list[dict]) -> bool:
        evals = [r for r in history if r["type"] == "eval" and self.metric in r]
        for record in evals[self.reported:]:
            self.reported += 1
            self.last = float(record[self.metric])
            self.trial.report(self.last, self.reported)
        return self.trial.should_prune()

    def __call__(self, loop) -> None:
        if self.report(loop.state.history):
            raise _optuna().TrialPruned(f"pruned after {self.reported} evaluations")


def tune(config: RunConfig, tune_config: TuneConfig | None = None, overwrite: bool = False, log=print) -> dict:
    """Run the search; returns the summary (also in RUN/tune.json) with the best value, params and paths."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("tune runs its trials one after another in one process: start it without "
                          "accelerate launch")
    optuna = _optuna()
    tc = tune_config or config.tune
    if tc is None:
        raise ConfigError("no search space: add a `tune:` section to the recipe or pass --space FILE")
    metric = tc.metric or config.train.early_stopping.metric
    direction = tc.direction or ("maximize" if config.train.early_stopping.mode == "max" else "minimize")
    check_space(config, tc)
    out = config.run_dir
    refuse_existing(out, overwrite, "or name=... for a new search")
    shutil.rmtree(out, ignore_errors=True)
    (out / "trials").mkdir(parents=True)
    raw = recipe_without_tune(config)
    raw["train"]["early_stopping"].update({"metric": metric, "mode": "max" if direction == "maximize" else "min"})
    write_text(out / "tune.yaml", dump_config(config))

    study = _study(optuna, tc, config.seed if tc.seed is None else tc.seed, direction)
    trials = Trials(tc, raw, out, metric, direction, log)
    timeout = tc.timeout_minutes * 60 if tc.timeout_minutes else None
    # a failed trial stops the search (a bug or bad data would fail every trial the same way)
    study.optimize(trials.run, n_trials=tc.trials, timeout=timeout, catch=())
    return _finish(study, trials, config.name)


def _study(optuna, tc: TuneConfig, seed: int, direction: str):
    sampler = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(tc.startup_trials, 1))
               if tc.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=tc.startup_trials, n_warmup_steps=tc.warmup_evals)
              if tc.pruner == "median" else optuna.pruners.NopPruner())
    study = optuna.create_study(direction=direction, sampler=sampler, pruner=pruner)
    for params in tc.first:
        study.enqueue_trial(params)
    return study


class Trials:
    """The search's objective: each trial a training run in RUN/trials/, its row in the results table (rewritten
    after every trial, whatever its end)."""

    def __init__(self, tc: TuneConfig, raw: dict, out: Path, metric: str, direction: str, log):
        self.tc, self.raw, self.out, self.metric, self.direction, self.log = tc, raw, out, metric, direction, log
        self.rows: list[dict] = []

    def run(self, trial) -> float:
        optuna, metric = _optuna(), self.metric
        params = suggest(trial, self.tc)
        name = f"trial-{trial.number:03d}"
        trial_raw = {**copy.deepcopy(self.raw), "name": name, "output_dir": str(self.out / "trials")}
        trial_raw["baselines"] = {"zero_shot": False, "shots": []}  # the same for every trial: not searched
        trial_config = with_params(trial_raw, params, name)
        reporter = PruneReporter(trial, metric)
        row = {"trial": trial.number, "state": "running", "value": None, "evaluations": 0, **params}
        self.rows.append(row)
        started = time.time()
        try:
            summary = train(trial_config, overwrite=True, plugins=[AfterStep(reporter)])
        except optuna.TrialPruned:
            row.update(state="pruned", evaluations=reporter.reported, seconds=round(time.time() - started, 1),
                       value=reporter.last)
            raise
        except TrainingFailed as err:  # a NaN/inf loss: these parameters diverge, the search goes on
            row.update(state="pruned", seconds=round(time.time() - started, 1))
            self.log(f"{name}: pruned, {err}")
            raise optuna.TrialPruned(str(err)) from None
        except Exception:
            row.update(state="failed", seconds=round(time.time() - started, 1))
            raise
        finally:
            if not self.tc.keep_models:
                for folder in MODEL_FOLDERS:
                    shutil.rmtree(self.out / "trials" / name / folder, ignore_errors=True)
            write_results(self.out, self.rows, metric, self.direction)
        reporter.report(_history(trial_config))  # the last evaluation, after the last step's hook
        value = summary["best_validation"][metric]
        if value is None:
            raise TunecraftError(f"{name}: no validation evaluation: tune needs a validation split "
                                 "(data.split.validation > 0 or data.validation)")
        test = summary.get("metrics", {}).get(metric)
        row.update(state="complete", value=value, evaluations=reporter.reported, steps=summary["steps"],
                   seconds=round(time.time() - started, 1), **({f"test_{metric}": test} if test is not None else {}))
        write_results(self.out, self.rows, metric, self.direction)
        self.log(f"{name}: {metric} {value:.4f}  " + "  ".join(f"{k}={v}" for k, v in params.items()))
        return value


def _finish(study, trials: Trials, name: str) -> dict:
    """The best trial's recipe (RUN/best.yaml) and the search's summary (RUN/tune.json)."""
    optuna, out, metric = _optuna(), trials.out, trials.metric
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise TunecraftError("no trial completed (all pruned): raise tune.startup_trials or tune.warmup_evals")
    best = study.best_trial
    best_config = with_params({**trials.raw, "name": f"{name}-best"}, best.params, "best")
    best_path = out / "best.yaml"
    write_text(best_path, f"# best of {len(study.trials)} trials of {name} (trial "
                          f"{best.number}, validation {metric} {best.value:.4f}); train it with "
                          f"`tunecraft train {best_path}`\n" + dump_config(best_config))
    summary = {"name": name, "metric": metric, "direction": trials.direction, "trials": len(study.trials),
               "complete": len(complete), "pruned": sum(r["state"] == "pruned" for r in trials.rows),
               "best_trial": best.number, "best_value": best.value, "best_params": best.params,
               "best_recipe": str(best_path), "results": str(out / "results.md")}
    write_text(out / "tune.json", json.dumps(summary, indent=2))
    return summary


def _history(config: RunConfig) -> list[dict]:
    return config.folder.metrics()


def write_results(out: Path, rows: list[dict], metric: str, direction: str) -> None:
    """results.csv and results.md: one row per trial, best first, pruned and failed trials last."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    done = [r for r in rows if r["state"] == "complete"]
    done.sort(key=lambda r: r["value"], reverse=direction == "maximize")
    ordered = done + [r for r in rows if r["state"] != "complete"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(ordered)
    write_text(out / "results.csv", buffer.getvalue())
    header = [c if c != "value" else f"validation {metric}" for c in columns]
    lines = [f"# Hyper-parameter search: {out.name}", "",
             f"Validation {metric} ({direction}); pruned trials show their last reported value.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in ordered]
    write_text(out / "results.md", "\n".join(lines) + "\n")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
