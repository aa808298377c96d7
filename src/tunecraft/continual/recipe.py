"""The continual recipe: a stream of tasks (each with its own data section), strategies, shared sections."""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from ..config import (
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    build_config,
    format_errors,
    read_recipe,
    with_method_name,
)
from ..errors import ConfigError
from ..methods import MethodConfig
from ..runs import RunRecipe
from ..settings import Strict


class NaiveConfig(Strict):
    name: Literal["naive"] = "naive"


class ReplayConfig(Strict):
    name: Literal["replay"] = "replay"
    memory_size: int = Field(200, ge=1)
    """Examples kept from earlier tasks (reservoir sampling over every training example seen)."""


class EwcConfig(Strict):
    name: Literal["ewc"] = "ewc"
    strength: float = Field(1e7, gt=0)
    """λ of the penalty λ/2 · Σ F_k (θ_k − θ*_k)². The empirical Fisher of a fine-tuned MiniLM-L6 is small
    (Σ F Δθ² was 2.6e-6 after one naive task switch here), so λ must be large to matter: 1e6 did not cut
    forgetting on the mixed stream, 1e7 did (docs/continual.md)."""
    fisher_samples: int = Field(200, ge=1)
    """Training examples of each finished task whose per-example gradients estimate the diagonal Fisher."""


class LwfConfig(Strict):
    name: Literal["lwf"] = "lwf"
    strength: float = Field(1.0, gt=0)
    """Weight of the distillation term (per example, like the task loss)."""
    temperature: float = Field(2.0, gt=0)


class AdaptersConfig(Strict):
    name: Literal["adapters"] = "adapters"
    r: int = Field(8, ge=1)
    alpha: float = Field(16, gt=0)
    lr: float | None = Field(1e-3, gt=0)
    """Learning rate for the adapters (LoRA wants a larger one than full fine-tuning); null keeps train.lr."""


StrategyConfig = NaiveConfig | ReplayConfig | EwcConfig | LwfConfig | AdaptersConfig
STRATEGY_NAMES = [c.model_fields["name"].default for c in (NaiveConfig, ReplayConfig, EwcConfig, LwfConfig,
                                                             AdaptersConfig)]


class StreamTask(Strict):
    name: str = Field(min_length=1)
    """The task id: names its run folders, its row/column of the accuracy matrix, and its adapter."""
    data: dict[str, Any] = Field(default_factory=dict)
    """A data section (as in `tunecraft train`), laid over the recipe's shared `data` section."""


class ContinualConfig(RunRecipe):
    name: str = "continual"
    task: Literal["classification"] = "classification"
    model: ModelConfig = ModelConfig()
    method: Annotated[MethodConfig, Field(discriminator="name")] = Field(
        default_factory=lambda: typing.get_args(MethodConfig)[0]()
    )
    """The method the sequential strategies train with (the adapters strategy always uses LoRA)."""
    train: TrainConfig = TrainConfig()
    """The training settings of every task (as in `tunecraft train`)."""
    data: DataConfig = DataConfig()
    """Data settings shared by every task of the stream (each task's own `data` wins)."""
    stream: list[StreamTask]
    strategies: list[Annotated[StrategyConfig, Field(discriminator="name")]] = Field(
        default_factory=lambda: [NaiveConfig()])

    @model_validator(mode="after")
    def _check(self):
        if not self.stream:
            raise ValueError("stream: empty; list at least one task")
        names = [t.name for t in self.stream]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stream: duplicate task name(s) {', '.join(dupes)}; task names must be unique")
        kinds = [s.name for s in self.strategies]
        if not kinds:
            raise ValueError("strategies: empty; list at least one of " + ", ".join(STRATEGY_NAMES))
        dupes = sorted({n for n in kinds if kinds.count(n) > 1})
        if dupes:
            raise ValueError(f"strategies: {', '.join(dupes)} listed twice")
        return self

    def task_config(self, index: int, strategy: str, source: str = "recipe",
                    method: dict | None = None, train: dict | None = None) -> RunConfig:
        """The `tunecraft train` config of stream task `index` under `strategy` (validated, errors name it)."""
        entry = self.stream[index]
        # the sections as the recipe gave them (unset keys keep the train recipe's defaults)
        given = self.model_dump(mode="json", exclude_unset=True, include={"model", "train", "data"})
        raw = {"name": f"{index}-{entry.name}", "output_dir": str(self.run_dir / strategy), "seed": self.seed,
               "task": self.task, "model": given.get("model", {}),
               "method": copy.deepcopy(method) if method is not None else self.method.model_dump(mode="json"),
               "train": {**given.get("train", {}), **(train or {})},
               "data": _merge(given.get("data", {}), entry.data)}
        # the stream's own test splits are scored by the stream; no validation-based model selection, so
        # every strategy ends a task on the weights of its last step
        raw["data"].setdefault("split", {})["validation"] = 0.0
        raw["baselines"] = {"zero_shot": False}  # the stream's report compares strategies, not baselines
        return build_config(raw, source=f"{source}: stream[{index}] ({entry.name})")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_continual(raw: dict, source: str = "recipe") -> ContinualConfig:
    """Validate a continual recipe and every task's train config (so a bad task fails before any training)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a recipe must be a YAML mapping of sections, got {type(raw).__name__}")
    if "stream" not in raw:
        raise ConfigError(f"{source}: missing 'stream' (the list of tasks to learn one after another)")
    try:
        config = ContinualConfig.model_validate(with_method_name(raw))
    except ValidationError as err:
        raise ConfigError(format_errors(err, source, ContinualConfig, "continual recipe",
                                        {"method": "method", "strategies": "strategy"})) from None
    for i in range(len(config.stream)):
        config.task_config(i, "check", source)
    return config


def load_continual(path: str | Path, overrides: list[str] | None = None) -> ContinualConfig:
    return build_continual(read_recipe(path, overrides), source=str(path))


def dump_continual(config: ContinualConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
