"""Reward functions for online RL (task: rl): a tunecraft run folder (a classifier's label probability, any field of
a run's `predict` row, e.g. a reward model's score), rule-based verifiable rewards (regex, exact answer, length)
and a Python function named in the recipe. Each scores a batch of completions; a run's rewards are summed with
their weights."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import ConfigError, TunecraftError
from ..runs import read_meta, run_model_dir

Prompt = str | list[dict]
RunPredictor = Callable[[str, list[str]], list[dict]]  # (run folder, texts) -> the run's `predict` rows


class Reward:
    """A reward function: `score(prompts, completions, answers)` → one float per completion."""

    def __init__(self, cfg, key: str):
        self.weight, self.key, self.text = cfg.weight, key, cfg.text
        self.name = key

    def score(self, prompts: list[Prompt], completions: list[str], answers: list[str | None]) -> list[float]:
        raise NotImplementedError

    def texts(self, prompts: list[Prompt], completions: list[str]) -> list[str]:
        """What a text reward reads: the prompt followed by the completion (plain-text prompts, text: full), or
        the completion alone."""
        return [p + c if self.text == "full" and isinstance(p, str) else c for p, c in zip(prompts, completions)]


def _dig(row: dict, path: str):
    value = row
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


class RunReward(Reward):
    """A number of a run's own `predict` row: `probabilities.<label>` for a classifier, or a named field (a
    reward model's score). The run's task does the inference, as `tunecraft predict` would."""

    def __init__(self, cfg, key: str, predict_run: RunPredictor | None = None):
        super().__init__(cfg, key)
        self.run, self.predict_run = cfg.run, predict_run
        try:
            folder = run_model_dir(cfg.run)
        except TunecraftError as err:
            raise ConfigError(f"{key}.run: {err}") from None
        self.meta = read_meta(folder)
        if cfg.label is not None and cfg.label not in (self.meta.get("labels") or []):
            raise ConfigError(f"{key}.label: unknown label '{cfg.label}'; the run {cfg.run} knows: "
                              f"{', '.join(self.meta.get('labels') or []) or 'no labels'}")
        self.path = f"probabilities.{cfg.label}" if cfg.label is not None else cfg.field
        self.name = f"{Path(cfg.run).name}:{cfg.label or cfg.field}"
        if cfg.field is not None:  # which fields a task's predict row has is only known by asking it
            row = self.predict(["A probe text."])[0]
            if not isinstance(_dig(row, self.path), int | float):
                raise ConfigError(f"{key}.field: '{cfg.field}' is not a number in the run's predict rows (fields: "
                                  f"{', '.join(row)})")

    def predict(self, texts: list[str]) -> list[dict]:
        if self.predict_run is None:  # handed down by the caller (tunecraft.trained.predict_with_run)
            raise TunecraftError(f"{self.key}.run: no run predictor was handed to the rewards")
        return self.predict_run(str(self.run), texts)

    def score(self, prompts, completions, answers) -> list[float]:
        return [float(_dig(row, self.path)) for row in self.predict(self.texts(prompts, completions))]


class RegexReward(Reward):
    """1 when the pattern is found in the text, else 0 (a format reward)."""

    def __init__(self, cfg, key: str):
        super().__init__(cfg, key)
        try:
            self.pattern = re.compile(cfg.regex)
        except re.error as err:
            raise ConfigError(f"{key}.regex: not a valid regular expression: {err}") from None
        self.name = f"regex:{cfg.regex}"

    def score(self, prompts, completions, answers) -> list[float]:
        return [float(self.pattern.search(t) is not None) for t in self.texts(prompts, completions)]


def first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0].strip() if stripped else ""


class ExactReward(Reward):
    """1 when the completion's first line (stripped) equals the prompt row's `answer`, else 0 (a verifiable
    answer)."""

    def __init__(self, cfg, key: str):
        super().__init__(cfg, key)
        self.name = "exact answer"

    def score(self, prompts, completions, answers) -> list[float]:
        return [float(a is not None and first_line(c) == a.strip()) for c, a in zip(completions, answers)]


class LengthReward(Reward):
    """1 at the target length in words, falling linearly to 0 at none or at twice the target."""

    def __init__(self, cfg, key: str):
        super().__init__(cfg, key)
        self.target = cfg.length
        self.name = f"length {cfg.length} words"

    def score(self, prompts, completions, answers) -> list[float]:
        return [max(0.0, 1.0 - abs(len(c.split()) - self.target) / self.target) for c in completions]


class FunctionReward(Reward):
    """The user's own `module:function(prompts, completions, answers)` → floats. It runs the user's code."""

    def __init__(self, cfg, key: str):
        super().__init__(cfg, key)
        module, _, name = cfg.function.partition(":")
        if not module or not name:
            raise ConfigError(f"{key}.function: expected module:function, got '{cfg.function}'")
        try:
            self.fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"{key}.function: cannot import '{cfg.function}': {err}") from None
        if not callable(self.fn):
            raise ConfigError(f"{key}.function: '{cfg.function}' is not callable")
        self.name = cfg.function

    def score(self, prompts, completions, answers) -> list[float]:
        out = list(self.fn(prompts, completions, answers))
        if len(out) != len(completions):
            raise TunecraftError(f"reward function {self.name} returned {len(out)} values for {len(completions)} "
                                 "completions")
        return [float(v) for v in out]


KINDS = {"run": RunReward, "regex": RegexReward, "exact": ExactReward, "length": LengthReward,
         "function": FunctionReward}


def build_rewards(configs: list, section: str = "task.rewards",
                  predict_run: RunPredictor | None = None) -> list[Reward]:
    """The reward functions of a recipe's list, checked (a missing run folder, an unknown label, a pattern that
    does not compile, a function that does not import: a ConfigError naming the key). `predict_run` is how a run
    reward gets its run's predictions: handed down from above the task package, which this module must not
    import."""
    if not configs:
        raise ConfigError(f"{section}: an RL run needs at least one reward, e.g. [{{run: runs/mr-lora, label: "
                          "positive}]")
    out = []
    for i, cfg in enumerate(configs):
        kind = next(k for k in KINDS if getattr(cfg, k) is not None)
        key = f"{section}.{i}"
        out.append(RunReward(cfg, key, predict_run) if kind == "run" else KINDS[kind](cfg, key))
    return out


def score(rewards: list[Reward], prompts: list[Prompt], completions: list[str],
          answers: list[str | None]) -> tuple[torch.Tensor, list[list[float]]]:
    """The weighted sum of the rewards per completion, and each reward's own values (in the order of `rewards`)."""
    each = [r.score(prompts, completions, answers) for r in rewards]
    total = torch.zeros(len(completions), dtype=torch.float32)
    for r, values in zip(rewards, each):
        total += r.weight * torch.tensor(values, dtype=torch.float32)
    return total, each
