"""The task contract: what the training loop, the run lifecycle, the reports, the CLI and the server may ask of
a task. Nothing outside `tasks/` (and the pre-training objectives) asks which task it is: it asks the task.

Two levels:
- `Objective`: what the training loop needs to train and score a model (batches, the loss, held-out scoring).
  The pre-training objectives (pretrain/objectives.py) are objectives.
- `Task(Objective)`: a fine-tuning task a run folder is made of: data, the model head, inference.

Each task declares its recipe settings (`Settings`, a `TaskSettings` subclass tagged by `name`: the recipe's
`task:` section); a run gets its own instance holding them (`tasks.build_task(config.task)`), so nothing of a run
lives on a module-level object.

What the layers above show or serve of a task are its facets, each registered by task name in the layer that
uses it, so that a task module imports nothing of them (tests/test_import_graph.py): how its results are shown
(evaluate/views/), the baselines it offers (evaluate/task_baselines.py), its HTTP routes (serve/routes/) and its
chat (chat.py). A task without a facet simply has none.

To add a task, copy the smallest complete one (`classification.py`), declare its `Settings`, implement the abstract
members, and register the class in `tasks/__init__.py` (or at run time with `tasks.register_task`): the recipe
schema, the loop, the run lifecycle and the CLI take it from there. Register its view in `evaluate/views/`, and
its routes, baselines and chat as it offers them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import torch
from pydantic import create_model

from ..data.dataset import BundledSets, Encoded, bundled_or_file, collate
from ..errors import ConfigError, TunecraftError
from ..runtime.inference import predict_logits
from ..settings import TaskSettings


class Objective(ABC):
    """What the training loop asks of what it trains."""

    NAME: ClassVar[str]
    METRICS: ClassVar[list[str]]
    """Scalar metrics `evaluate` returns that train.early_stopping.metric may name."""
    HEADLINE: ClassVar[tuple[str, str]]
    """The two metrics the CLI prints, the report plots over training and `tunecraft report` ranks by."""
    EARLY_STOPPING: ClassVar[tuple[str, str]] = ("loss", "min")
    """The validation metric (and whether higher is better) early stopping watches unless the recipe says."""
    UNIT: ClassVar[str] = "tokens"
    """What `units` counts (plural): throughput is logged as <UNIT>_per_s and summarised as <UNIT>_per_second."""

    def units(self, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        """How much a training batch trained on, in UNIT: (real, processed with padding). By default its
        attention mask's ones and positions (tokens); an objective over other inputs counts its own (images)."""
        mask = batch.get("attention_mask")
        if mask is None:
            raise TunecraftError(f"{self.NAME}: its batches have no attention_mask to count tokens by; the "
                                 "objective must say what a step trains on (Objective.units and UNIT)")
        return int(mask.sum()), mask.numel()

    def collate(self, enc: Encoded, indices: list[int], pad_id: int, multiple: int = 1) -> dict[str, torch.Tensor]:
        """A padded training batch of the features `indices` (an objective may mask or relabel here)."""
        return collate(enc, indices, pad_id, multiple)

    def prepare(self, model, batch: dict) -> dict:
        """The batch the forward pass takes, made with the current model just before its step (the unwrapped
        model, in training mode, which it must be left in). Online objectives sample from the model here (the
        rollouts of RL); "labels" may then be a dict of tensors that only `count` and `loss_sum` read. By
        default the collated batch as is."""
        return batch

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What of a training batch the model's forward takes: all but the labels, unless the batch carries more
        for the loss (a preference batch's completion masks and reference log-probs)."""
        return {k: v for k, v in batch.items() if k != "labels"}

    @abstractmethod
    def count(self, batch: dict[str, torch.Tensor]) -> int:
        """How many loss terms a batch contributes (the denominator of the mean loss)."""

    @abstractmethod
    def loss_sum(self, outputs, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's loss summed over its `count` terms (so that accumulation windows weigh every term once)."""

    def step_terms(self, outputs, batch: dict) -> dict[str, tuple[float, int]]:
        """Numbers the training log shows beside the loss, as name → (their sum over this batch, how many): the
        loop logs each one's mean over the steps a log line covers (RL: the reward, per reward function, and the
        KL to the reference). None by default."""
        return {}

    def infer(self, model, enc: Encoded, batch_size: int, pad_id: int, device: torch.device, dtype=None,
              rank: int = 0, world: int = 1, gather=None):
        """Held-out scores for `evaluate` (logits by default), in input order."""
        return predict_logits(model, enc, batch_size, pad_id, device, dtype, rank, world, gather)

    @abstractmethod
    def evaluate(self, scores, enc: Encoded, label_map) -> dict:
        """Metrics of held-out `scores` (from `infer`); scalars among them are logged and may steer early stopping."""


class Task(Objective):
    """A fine-tuning task: what a run folder, `eval` and `predict` need of it (its facets live above)."""

    Settings: ClassVar[type[TaskSettings]] = TaskSettings
    """The class of the recipe's `task:` section for this task (a `TaskSettings` with `name:
    Literal["<NAME>"]`); a task that declares none gets one holding only its name."""
    MODEL_CLASS: ClassVar[type]
    """The transformers auto class that loads the exported model/ folder."""
    PEFT_TASK_TYPE: ClassVar[str]
    """peft's TaskType for this head (SEQ_CLS, TOKEN_CLS, CAUSAL_LM): how the PEFT methods wrap the model."""
    OFFERS: ClassVar[frozenset[str]] = frozenset()
    """The run-level commands beyond train/eval/predict/report its runs support: "robustness", "compress"."""
    GENERATIVE: ClassVar[bool] = False
    """Also scored by generating text (`generation_eval`), and compared with the base model before training."""
    AUTO_PRECISION: ClassVar[str] = "native"
    """What `--precision auto` means when this task's runs predict, are scored or are served: "native" (bf16 where
    the hardware has it, else fp32) or "fp32" (runtime/precision.resolve)."""
    LEGACY_SETTINGS: ClassVar[str | None] = None
    """The tunecraft.json key under which a run written before `task_settings` kept this task's settings."""
    LEGACY_KEYS: ClassVar[tuple[str, ...] | None] = None
    """Which keys of that section are the task's settings (None: all)."""
    run_predictor = None
    """(run folder, texts) -> that run's `predict` rows, for tasks that score with another run (rl's run rewards):
    handed down by the caller above the task package (`hand_runs`), which the tasks must not import."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("NAME")
        if name is not None and "Settings" not in cls.__dict__:  # no settings of its own: the tag alone
            cls.Settings = create_model(f"{cls.__name__}Settings", __base__=TaskSettings, name=(Literal[name], name))

    def __init__(self, settings: TaskSettings | None = None):
        self.settings = settings if settings is not None else self.Settings(name=self.NAME)
        """This run's `task:` settings (the recipe's, or rebuilt from a run folder's tunecraft.json)."""

    @classmethod
    def settings_from_meta(cls, meta: dict) -> TaskSettings:
        """A trained run's settings from its tunecraft.json (`options` wrote them there); by default the
        stored `task_settings`; for a run written before they were stored, its LEGACY_SETTINGS section (with, for
        a GENERATIVE task, the "generation" section beside it), else the defaults."""
        legacy = meta.get(cls.LEGACY_SETTINGS) if cls.LEGACY_SETTINGS else None
        if "task_settings" not in meta and isinstance(legacy, dict):  # a run written before task_settings
            kept = {k: v for k, v in legacy.items() if cls.LEGACY_KEYS is None or k in cls.LEGACY_KEYS}
            return cls.Settings.model_validate(
                {**kept, "generation": meta.get("generation") or {}} if cls.GENERATIVE else kept)
        stored = meta.get("task_settings")
        return cls.Settings.model_validate(stored) if isinstance(stored, dict) else cls.Settings(name=cls.NAME)

    def hand_runs(self, predictor) -> Task:
        self.run_predictor = predictor
        return self

    # -- data ------------------------------------------------------------------------------------------------
    @abstractmethod
    def load_data(self, data_cfg):
        """The train/validation/test splits with their label map, columns and a description (bad data fails here)."""

    BUNDLED: ClassVar[BundledSets | None] = None
    """The task's bundled example sets, for `load_data` and `load_eval_examples`."""

    def read_file(self, path: str, meta: dict, fmt: str) -> list:
        """The examples of one data file, read as the run's meta says (`load_eval_examples`)."""
        raise TunecraftError(f"task {self.NAME} reads no example files")

    def load_eval_examples(self, spec: str, meta: dict, fmt: str, split: str, seed: int, fractions) -> list:
        """Examples of a bundled set's split or of a file, read as the run was trained (`tunecraft eval`): by
        default `BUNDLED` or `read_file`, through the one loader (data/dataset.py `bundled_or_file`)."""
        bundled = self.BUNDLED or BundledSets((), lambda *_: {}, f"{self.NAME} set")
        return bundled_or_file(spec, split, seed, fractions, bundled, lambda path: self.read_file(path, meta, fmt))

    def training_texts(self, examples: list):
        """The raw texts of examples (to build a character tokenizer for a scratch model): by default each
        example's `text`."""
        return (e.text for e in examples)

    @abstractmethod
    def encode(self, tokenizer, examples: list, meta: dict, label_map=None) -> Encoded:
        """Examples → features, as the exported model's meta (tunecraft.json) says."""

    def options(self, config) -> dict:
        """Task settings stored with the model (tunecraft.json), so eval/predict/serve encode the same way."""
        return {}

    def check_config(self, config) -> None:
        """Refuse settings this task cannot honour, before any data is read or folder written."""
        if config.data.augment.copies:
            raise ConfigError(f"data.augment: text augmentation is not offered for task {self.NAME}")
        if config.train.class_weights is not None:
            raise ConfigError(f"train.class_weights: class weights are offered for task classification, not "
                              f"{self.NAME}")
        if config.train.sampler != "shuffle":
            raise ConfigError(f"train.sampler: the balanced sampler is offered for task classification, not "
                              f"{self.NAME}")

    # -- model -----------------------------------------------------------------------------------------------
    @abstractmethod
    def build_model(self, base, label_map, dropout: float | None = None) -> torch.nn.Module:
        """A model with this task's head on the base (pretrained weights, or a scratch config)."""

    def fit_training_data(self, config, label_map, train_enc: Encoded) -> None:
        """Learn what the loss needs from the encoded training split before anything is written (e.g. class
        weights); called on every `train` and `plan`, so it must reset what an earlier run set. By default
        nothing."""

    def before_training(self, model, splits: dict, session) -> None:
        """Work with the model as it is before the first optimizer step (`splits`: train/validation/test
        Encoded, None where absent; `session`: the run session, train/session.py): e.g. reference log-probs
        computed once and cached in the run folder. Runs on resume too, before the checkpoint is loaded."""

    # -- inference and evaluation ----------------------------------------------------------------------------
    def prediction_rows(self, examples: list, scores, enc: Encoded, label_map) -> list[dict]:
        """One predictions.jsonl row per held-out example: by default its scores, as they are."""
        return [dict(s) if isinstance(s, dict) else {"score": s} for s in _rows_of(scores)]

    def generation_eval(self, model, tokenizer, examples: list, gen: dict, dtype=None) -> dict:
        """Metrics of generated text (GENERATIVE tasks), with the rows under "generations"."""
        return {}

    @abstractmethod
    def predict(self, trained, inputs: list[str | dict], batch_size: int, dtype, warn: bool = True) -> list[dict]:
        """Inputs → one result dict each: `tunecraft predict`, the server's routes and run rewards all call this.
        An input is a raw text, read as `tunecraft predict` reads it, or a record of the task's fields
        (classification: text, text_pair; reward_model: text, prompt; token_classification: text, or tokens
        for words already split; the generative tasks: text). `warn`: say on the terminal how many inputs were
        cut (off for the server, which would say it for every batch)."""


def records(inputs: list[str | dict], field: str = "text") -> list[dict]:
    """`predict`'s inputs as records: a raw text is the record {field: text}."""
    return [item if isinstance(item, dict) else {field: item} for item in inputs]


def _rows_of(scores) -> list:
    return scores.tolist() if isinstance(scores, torch.Tensor) else list(scores)
