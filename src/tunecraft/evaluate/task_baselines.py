"""Which baselines each task offers, registered by task name: a check that refuses a set-up that cannot run
(before training) and a run that scores them on the run's own held-out split. A task not named here offers
none. The baselines themselves are in evaluate/baselines.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from ..runtime.precision import resolve as resolve_precision
from .baselines import check_classification_baselines, classification_baselines, finetune_shots, lexicon_ner


class Offered(NamedTuple):
    check: Callable
    """(config, data, base) -> None, or a ConfigError naming the key."""
    run: Callable
    """(task, config, data, base, run_dir, fit) -> the baselines' rows. `fit(config, data)` trains a run
    (tunecraft.train), for baselines that fine-tune; None where they cannot (under several processes)."""


def _no_check(config, data, base) -> None:
    pass


def _classification(task, config, data, base, run_dir: Path, fit=None) -> list[dict]:
    found = classification_baselines(config, data, base.path)
    if config.baselines.finetune_shots and fit is not None:
        found += finetune_shots(config, data, run_dir, fit)
    return found


def _lexicon(task, config, data, base, run_dir: Path, fit=None) -> list[dict]:
    if not config.baselines.lexicon:
        return []
    ner = config.task
    return [lexicon_ner(data.train, data.test or data.validation, ner.scheme, ner.strict)]


def _reward(task, config, data, base, run_dir: Path, fit=None) -> list[dict]:
    """On the run's held-out pairs: the base model with an untrained head (about chance), and the length of
    each text as its reward (the longer preferred: the bias reward models are known to pick up)."""
    pairs = data.test or data.validation
    if not pairs:
        return []
    meta = {"max_length": config.model.max_length, **task.options(config)}
    enc = task.encode(base.tokenizer, pairs, meta)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(config.seed)
    model = task.build_model(base, None, config.model.dropout).to(device)
    _, dtype = resolve_precision(config.train.precision)
    untrained = task.evaluate(task.infer(model, enc, config.train.batch_size * 2, base.tokenizer.pad_token_id,
                                         device, dtype), enc)
    lengths = torch.tensor([[len(c), len(r)] for c, r in zip(enc.input_ids, enc.rejected_ids)], dtype=torch.float)
    by_length = task.evaluate(lengths, enc)
    keep = ("accuracy", "mean_margin", "loss", "ece")
    return [{"name": "untrained head", "metrics": {k: untrained[k] for k in keep},
             "note": "the base model with a fresh reward head (seeded): about chance"},
            {"name": "text length", "metrics": {k: by_length[k] for k in keep},
             "note": "reward = length in tokens, the longer preferred (margin in tokens)"}]


BASELINES: dict[str, Offered] = {
    "classification": Offered(check_classification_baselines, _classification),
    "token_classification": Offered(_no_check, _lexicon),
    "reward_model": Offered(_no_check, _reward),
}


def _none(task, config, data, base, run_dir: Path, fit=None) -> list[dict]:
    return []


def baselines_of(task: str) -> Offered:
    """The baselines the task named `task` offers (none: a check that passes and a run that finds nothing)."""
    return BASELINES.get(task, Offered(_no_check, _none))
