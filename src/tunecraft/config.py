"""Typed, validated run configuration: YAML recipes plus dotted overrides; errors name the key."""

from __future__ import annotations

import difflib
import logging
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, Field, SerializeAsAny, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from .errors import ConfigError
from .methods import METHODS, MethodConfig
from .runs import RunRecipe
from .settings import Strict, TaskSettings

logger = logging.getLogger("tunecraft")


class ModelConfig(Strict):
    base: str = "minilm-l6"
    """A bundled model name (see `tunecraft assets list`), a local Hugging Face model folder, or
    `scratch:<size>` for a randomly initialised model of a named size (see `tunecraft.models.sizes`)."""
    tokenizer: str | None = None
    """For scratch models: a tokenizer folder, or `chars` for one token per character of the training text."""
    max_length: int = Field(128, ge=8, le=4096)
    chat_template: str | None = None
    """The chat template conversations are rendered with: null for the tokenizer's own, a name (chatml,
    llama-3, zephyr) or a Jinja file. It is saved with the model, so eval, serve, chat and every export render
    with the same one (see models/chat_templates.py)."""
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    """Override every dropout probability of the model (0 makes training deterministic per batch)."""
    long_documents: Literal["truncate", "windows"] = "truncate"
    """Classification texts longer than max_length: cut them (a warning counts them), or read each as
    overlapping windows whose logits are pooled, in training (every window carries the text's label),
    evaluation, predict and serve (see data/long_documents.py)."""
    window_stride: int = Field(32, ge=0)
    """long_documents: windows: tokens shared by consecutive windows (at most max_length / 2)."""
    window_pool: Literal["mean", "max"] = "mean"
    """long_documents: windows: how a text's window logits become its logits."""


class SplitConfig(Strict):
    validation: float = Field(0.1, ge=0.0, lt=1.0)
    test: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 42
    stratify: bool = True
    """Classification from your own file: carve validation and test out of each label's examples alike, so every
    split keeps the file's label proportions (a rare label is not left out of the test split by chance). The
    bundled sets keep their fixed seeded split, so published numbers stay."""


class AugmentConfig(Strict):
    """EDA-style augmentation of the training split only (Wei & Zou 2019): each copy applies synonym
    replacement, random insertion, random swap and random deletion, each to about `alpha` of the words."""

    copies: int = Field(0, ge=0, le=16)
    """Augmented copies added per training example; 0 turns augmentation off."""
    alpha: float = Field(0.1, gt=0.0, le=0.5)
    """Fraction of a text's words each operation touches (at least one word)."""
    ops: list[Literal["synonym", "insert", "swap", "delete"]] = ["synonym", "insert", "swap", "delete"]
    seed: int | None = None
    """Seed of the augmentation; null uses the run's seed."""


class DataConfig(Strict):
    dataset: str | None = "mr"
    """A bundled dataset (mr, amazon, tweets, nyt; pd-ner for token classification) or null when `train`
    names a file."""
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "sqlite", "conll"] = "auto"
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    missing_labels: Literal["error", "drop"] = "error"
    """A label cell that is empty or spells a missing value (NaN, nan, NA, N/A, null, None): "error" names its
    file, line and field; "drop" leaves the row out and logs how many rows were left out."""
    columns: dict[str, str] = {}
    """The user's field names, for every task: the field tunecraft reads → the name in the user's files, e.g.
    `{instruction: question, output: answer}` (Alpaca), `{chosen: preferred}` (preference pairs), `{text:
    review, label: stars}` (classification; the same as text_column/label_column). Recorded with the run, so
    `tunecraft eval` reads another file of the same shape."""
    split: SplitConfig = SplitConfig()
    """Used for the splits that are not given as files."""
    max_train_samples: int | None = Field(None, ge=1)
    max_eval_samples: int | None = Field(None, ge=1)
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _files_replace_the_bundled_set(self):
        # `train` wins over `dataset` when reading; the resolved config.yaml must not name a set never used
        # (robustness and plan --auto read it back)
        if self.train:
            self.dataset = None
        return self

    @model_validator(mode="after")
    def _columns_name_the_classification_fields(self):
        # text/text_pair/label in `columns` are the classification readers' column names: one value for each
        for ours, field in (("text", "text_column"), ("text_pair", "text_pair_column"), ("label", "label_column")):
            if ours not in self.columns:
                continue
            theirs, given = self.columns[ours], getattr(self, field)
            if field in self.model_fields_set and given != theirs:
                raise ValueError(f"data.columns.{ours} ({theirs!r}) and data.{field} ({given!r}) name two columns "
                                 f"for one field; keep one")
            setattr(self, field, theirs)
        if len(set(self.columns.values())) != len(self.columns):
            raise ValueError("data.columns: two fields map to one column name")
        return self


class EarlyStoppingConfig(Strict):
    metric: str | None = None
    """The validation metric that picks the best model: accuracy for classification, f1 (entity-level)
    for token classification, when not set."""
    mode: Literal["max", "min"] | None = None
    """null: min for loss and perplexity, max for everything else."""
    patience: int | None = Field(None, ge=1)
    """Stop after this many evaluations without improvement; null never stops early."""


class RDropConfig(Strict):
    alpha: float = Field(0.0, ge=0.0)
    """Weight of the symmetric KL between two dropout passes (Liang et al. 2021); 0 is off."""


class AdversarialConfig(Strict):
    """Adversarial training on the word-embedding output: FGM (one step) or PGD (`steps` steps)."""

    method: Literal["none", "fgm", "pgd"] = "none"
    epsilon: float = Field(0.1, gt=0.0)
    """Norm of the perturbation of each example's embeddings (FGM), or the radius of the PGD ball. MiniLM's
    word embeddings have norm ~1.07 per token; at 1.0, 500-example mr runs collapsed to chance (3 seeds)."""
    alpha: float = Field(0.03, gt=0.0)
    """PGD step size."""
    steps: int = Field(3, ge=1, le=20)
    """PGD steps (each one more forward and backward pass)."""
    weight: float = Field(1.0, gt=0.0)
    """Weight of the adversarial loss added to the clean one."""


class TrainConfig(Strict):
    epochs: float = Field(3, gt=0)
    max_steps: int | None = Field(None, ge=1)
    """Optimizer steps; overrides epochs when set."""
    batch_size: int = Field(32, ge=1)
    """Examples per micro-batch, per process."""
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 where the hardware has it (CPU with AVX512-BF16/AMX, Ampere+ GPU), else fp32."""
    group_by_length: bool = True
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of storing them: less memory, slower steps."""
    eval_every: int | None = Field(None, ge=1)
    """Evaluate on the validation split every N optimizer steps (and always at each epoch end)."""
    eval_each_epoch: bool = True
    log_every: int = Field(10, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)
    """Write a resumable checkpoint every N optimizer steps (and at each evaluation)."""
    keep_checkpoints: int = Field(2, ge=1)
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = ["tensorboard"]
    """Where the training curves go besides metrics.jsonl: TensorBoard (RUN/tensorboard), MLflow (a local SQLite
    store, <output_dir>/mlflow.db, unless $MLFLOW_TRACKING_URI names another), Weights & Biases (offline unless
    $WANDB_MODE says otherwise; needs the wandb package)."""
    tensorboard: bool = True
    """false: no TensorBoard even where `trackers` lists it (the short form of leaving it out)."""
    progress: bool = True
    num_threads: int | None = Field(None, ge=1)
    """Torch's threads; default: the CPUs this process may use (affinity, capped by a cgroup quota) that other work
    leaves idle at start (sampled for 0.1 s)."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    """Mix this much of the uniform distribution into the target (0 is off)."""
    class_weights: Literal["balanced"] | dict[str, Annotated[float, Field(gt=0.0)]] | None = None
    """Weighted cross-entropy (task classification): `balanced` (sklearn's compute_class_weight on the training
    labels, n_samples / (n_classes * count)) or a weight per label name; labels a mapping leaves out weigh 1.
    null: unweighted."""
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    """Task classification: `balanced` draws each epoch's examples with replacement, each label equally often
    in expectation (weight 1 / its count; the epoch keeps the training split's size, and the draw depends only on
    seed and epoch, so resume stays exact); `shuffle` visits every example once per epoch."""
    rdrop: RDropConfig = RDropConfig()
    adversarial: AdversarialConfig = AdversarialConfig()
    layer_lr_decay: float | None = Field(None, gt=0.0, le=1.0)
    """Layer-wise LR decay: the head trains at lr, block i of L at lr * decay^(L-i), embeddings at
    lr * decay^(L+1). null is off."""

    @model_validator(mode="after")
    def _tensorboard_off(self):
        if not self.tensorboard and "tensorboard" in self.trackers:
            self.trackers = [t for t in self.trackers if t != "tensorboard"]
        return self


class ClozeConfig(Strict):
    """A cloze prompt for models with a masked-LM head: the label whose verbaliser words score highest at the
    mask wins (Schick & Schütze 2021, without training)."""

    template: str = "{text} It was {mask}."
    verbalizers: dict[str, list[str]]
    """Words per label, e.g. {negative: [terrible, bad], positive: [great, good]}; each one token."""


class BaselinesConfig(Strict):
    """Baselines scored on the run's test split and shown beside the fine-tuned result (evaluate/baselines.py):
    with the base encoder (zero-shot, prototypes, cloze), a causal LM (in-context), short fine-tunes on k
    examples per class, TF-IDF + LinearSVC on the training split, and for NER a lexicon."""

    tfidf: bool = True
    """Classification: TF-IDF word 1-2 grams (sublinear tf) + LinearSVC fit on the run's training split; a
    fine-tuned result below it is marked "below baseline" on the terminal and in the reports. Seconds."""
    zero_shot: bool = True
    """Embedding similarity of each text to each label's description."""
    descriptions: list[dict[str, str]] | None = None
    """Candidate description sets ({label: text}); the one with the best validation accuracy is used. null:
    the label names and two templates around them."""
    shots: list[int] = []
    """Few-shot nearest-prototype baselines with this many training examples per class (3 draws each)."""
    finetune_shots: list[int] = []
    """Short fine-tunes of the run's own model and method on this many training examples per class (3 draws
    each), scored on the run's test split; only their numbers are kept."""
    finetune_epochs: int = Field(10, ge=1)
    lexicon: bool = True
    """NER: tag every entity string of the training split wherever it occurs (memorisation, no training)."""
    cloze: ClozeConfig | None = None
    """A cloze-prompt baseline; needs a base model with a masked-LM head (e.g. one from `tunecraft pretrain`)."""
    icl_shots: list[int] = []
    """In-context baselines with a causal LM: this many training examples per class in the prompt (3 draws
    each; 0 is the instruction alone), each label word scored by log-likelihood. Empty: off."""
    icl_model: str = "smollm2-135m"
    """The causal LM of the in-context baselines: a bundled model or a local folder."""
    icl_max_samples: int | None = Field(200, ge=1)
    """Score a seeded sample of at most this many test texts (one forward pass per text and label)."""
    icl_calibrate: bool = True
    """Contextual calibration: divide each label's probability by its probability for the text "N/A"."""


class ParamSpace(Strict):
    """One searched value: a float or int range (log-uniform with `log`), or a list of choices."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    """Grid step of an int (or float) range; null: any value."""
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self):
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"a {self.type} parameter needs low <= high")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scaled range needs low > 0")
        return self


class TuneConfig(Strict):
    """Hyper-parameter search (`tunecraft tune`, Optuna). Each trial is a training run of this recipe with the
    `space` values as dotted overrides; the validation metric is reported after every evaluation so that the
    pruner can stop trials that trail the others."""

    trials: int = Field(10, ge=1)
    timeout_minutes: float | None = Field(None, gt=0)
    """Stop starting new trials after this long (the running one finishes)."""
    metric: str | None = None
    """The validation metric to optimise; default: train.early_stopping.metric (trials select on it too)."""
    direction: Literal["maximize", "minimize"] | None = None
    """Default: from train.early_stopping.mode."""
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "none"] = "median"
    startup_trials: int = Field(2, ge=0)
    """Trials that run to the end before the median pruner may prune anything."""
    warmup_evals: int = Field(0, ge=0)
    """Evaluations of a trial before it may be pruned."""
    seed: int | None = None
    """Sampler seed; null: the recipe's seed."""
    space: dict[str, ParamSpace] = {}
    """Dotted recipe key → its range, e.g. `train.lr: {type: float, low: 1e-4, high: 3e-3, log: true}`."""
    first: list[dict[str, Any]] = []
    """Settings tried first, in order (e.g. the recipe's own values as a baseline): key → value."""
    keep_models: bool = False
    """Keep each trial's model/, adapter/ and checkpoints/ (off: only the best recipe is kept, re-train it)."""


def task_classes() -> dict:
    """The task registry (name → task class); imported when first asked, as the tasks import the data layer."""
    from .tasks import TASKS

    return TASKS


class TaskUnion:
    """Marks `task:` as a tagged union whose members are the registered tasks' settings classes (read when
    asked, so a task registered at run time is one): the launch form offers their names like `method:`'s."""

    def members(self) -> list[type[BaseModel]]:
        return [cls.Settings for cls in task_classes().values()]


def task_settings(value: Any) -> TaskSettings:
    """A recipe's `task:` (a name, or a mapping with `name`) validated by the settings class of the task it
    names; errors name `task.<key>` and the valid keys."""
    if isinstance(value, TaskSettings):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise _task_error(f"task: a task name or a mapping with `name`, got {type(value).__name__}")
    tasks = task_classes()
    name = value.get("name", "classification")
    if name not in tasks:
        raise _task_error(f"task: unknown task {name!r}; choose one of {', '.join(tasks)}")
    settings = tasks[name].Settings
    try:
        return settings.model_validate({**value, "name": name})
    except ValidationError as err:
        raise _task_error("\n".join(error_lines(err, settings, prefix="task."))) from None


def _task_error(text: str) -> PydanticCustomError:
    return PydanticCustomError("task_settings", "{text}", {"text": text})


def move_legacy_task_keys(raw: dict) -> dict:
    """An old recipe's task sections (`generation`, `preference`, `data.sft`...: each task's `LEGACY`) moved into
    `task:`, with one warning naming old → new keys; a section the recipe's task never read is dropped (it was
    ignored before). A key set both ways keeps the `task:` value."""
    tasks = task_classes()
    sections = {old for cls in tasks.values() for old in cls.Settings.LEGACY}
    found = [old for old in sections if isinstance(_section(raw, old), dict)]
    if not found:
        return raw
    raw = {**raw, "data": dict(raw["data"])} if isinstance(raw.get("data"), dict) else dict(raw)
    task = raw.get("task", "classification")
    task = {"name": task} if isinstance(task, str) else dict(task) if isinstance(task, dict) else None
    cls = tasks.get(task.get("name", "classification")) if task is not None else None
    claimed = cls.Settings.LEGACY if cls is not None else {}
    moved, dropped = [], []
    for old in sorted(found):
        values = _pop_section(raw, old)
        if old not in claimed:
            dropped.append(old)
            continue
        target = task
        if claimed[old]:
            target = task[claimed[old]] = dict(task.get(claimed[old]) or {})
        for key, value in values.items():
            new = ".".join(p for p in ("task", claimed[old], key) if p)
            if key not in target:
                target[key] = value
            moved.append(f"{old}.{key} → {new}")
    if task is not None:
        raw["task"] = task
    logger.warning("recipe: old-form task keys%s%s", f" moved into task: {', '.join(moved)}" if moved else "",
                   f"; dropped {', '.join(dropped)} (not read by task {task and task.get('name', 'classification')})"
                   if dropped else "")
    return raw


def without_legacy_data_keys(data: dict) -> dict:
    """A `data:` section as an old run folder's config.yaml holds it, less the task sections that moved into
    `task:` (data.ner, data.sft, data.preference), so it validates as a DataConfig."""
    moved = {old.split(".", 1)[1] for cls in task_classes().values() for old in cls.Settings.LEGACY
             if old.startswith("data.")}
    return {k: v for k, v in data.items() if k not in moved}


def _section(raw: dict, dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _pop_section(raw: dict, dotted: str) -> dict:
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node[part]
    return node.pop(last)


class RunConfig(RunRecipe):
    task: Annotated[SerializeAsAny[TaskSettings], BeforeValidator(lambda v: task_settings(v)), TaskUnion()] = Field(
        default_factory=lambda: task_settings("classification"))
    """The task and its settings: `task: {name: preference, objective: dpo, beta: 0.1}`, or a bare name
    (`task: classification`) for its defaults. The names are the task registry's (tunecraft.tasks)."""
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    method: Annotated[MethodConfig, Field(discriminator="name")] = Field(
        default_factory=lambda: typing.get_args(MethodConfig)[0]()
    )
    train: TrainConfig = TrainConfig()
    baselines: BaselinesConfig = BaselinesConfig()
    tune: TuneConfig | None = None
    """Read by `tunecraft tune` only; `train` ignores it."""

    @model_validator(mode="before")
    @classmethod
    def _legacy_task_keys(cls, raw: Any) -> Any:
        return move_legacy_task_keys(raw) if isinstance(raw, dict) else raw

    @model_validator(mode="after")
    def _task_defaults(self):
        task = task_classes()[self.task.name]
        es = self.train.early_stopping
        if es.metric is None:
            es.metric = task.EARLY_STOPPING[0]
        if es.metric not in task.METRICS:
            raise ValueError(f"train.early_stopping.metric: unknown metric '{es.metric}' for {self.task.name}; "
                             f"choose one of {', '.join(task.METRICS)}")
        if es.mode is None:
            es.mode = "min" if es.metric in ("loss", "perplexity") else "max"
        return self


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form dotted.key=value (e.g. train.lr=3e-4)")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}': empty key part")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """The dotted overrides applied to a recipe's YAML. One that changes `method.name` (or `task.name`) replaces
    the method (the task): the recipe's keys of that section that the new one does not have are dropped, with a
    warning naming them (the ones given as overrides are kept and checked)."""
    before = {k: _tag(raw.get(k), default) for k, default in (("method", "full"), ("task", "classification"))}
    overridden = set()
    parsed = [parse_override(text) for text in overrides]
    legacy = _legacy_paths(before["task"], parsed)
    for text, (path, value) in zip(overrides, parsed):
        path = _moved_override(text, path, legacy)
        if path[0] == "task" and len(path) > 1 and isinstance(raw.get("task"), str):  # `task: causal_lm`
            raw["task"] = {"name": raw["task"]}
        overridden.add(tuple(path))
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is a value, not a section")
            node = child
        node[path[-1]] = value
    fields = {"method": lambda n: METHODS[n].Config.model_fields if n in METHODS else None,
              "task": lambda n: task_classes()[n].Settings.model_fields if n in task_classes() else None}
    for section, default in (("method", "full"), ("task", "classification")):
        node = raw.get(section)
        if isinstance(node, dict) and before[section] is not None and node.get("name", default) != before[section]:
            _keep_keys_of_the_new(section, node, before[section], fields[section](node.get("name", default)),
                                  {p[1] for p in overridden if len(p) == 2 and p[0] == section})
    return raw


def _legacy_paths(recipe_task: str | None, parsed: list[tuple[list[str], Any]]) -> dict[str, str]:
    """Old section → its place under `task:` for the task the overrides leave the recipe with."""
    name = recipe_task or "classification"
    for path, value in parsed:
        if path == ["task"] and isinstance(value, str) or path == ["task", "name"]:
            name = value
    cls = task_classes().get(name)
    return dict(cls.Settings.LEGACY) if cls is not None else {}


def _moved_override(text: str, path: list[str], legacy: dict[str, str]) -> list[str]:
    """An override of an old-form task key (`generation.max_new_tokens=8`, `rl.group_size=2`) set where the key
    lives now (`task.generation.max_new_tokens`, `task.group_size`), with a warning: moving it after the recipe
    is merged would let a recipe's own `task:` value win over the command line."""
    for old, target in legacy.items():
        parts = old.split(".")
        if path[: len(parts)] == parts and len(path) > len(parts):
            new = ["task", *(target.split(".") if target else []), *path[len(parts):]]
            logger.warning("override %s: the key moved to %s", text, ".".join(new))
            return new
    return path


def _tag(node: Any, default: str) -> str | None:
    if isinstance(node, str):
        return node
    return node.get("name", default) if isinstance(node, dict) else None


def _keep_keys_of_the_new(section: str, node: dict, before: str, fields: dict | None, overridden: set[str]) -> None:
    if fields is None:  # validation names the unknown method (task) and the valid ones
        return
    dropped = [k for k in node if k not in fields and k not in overridden]
    for key in dropped:
        del node[key]
    if dropped:
        logger.warning("%s.name=%s replaces the recipe's %s %s: dropped %s, which %s does not have", section,
                       node["name"], section, before, ", ".join(f"{section}.{k}" for k in dropped), node["name"])


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The settings classes an annotation holds (through Optional, list, dict, Annotated and unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in models_in(arg)]


def tag_of(cls: type[BaseModel]) -> str | None:
    """The `name` a class of a tagged union (methods, strategies) answers to."""
    field = cls.model_fields.get("name")
    return field.default if field is not None and typing.get_origin(field.annotation) is Literal else None


def _walk(loc: tuple, root: type[BaseModel]) -> tuple[str, list[str]]:
    """A pydantic error location → (the dotted key, without the union tags pydantic inserts; the valid field
    names of the section the key's last part is in)."""
    candidates, key, mapping_key = [root], [], False
    for i, part in enumerate(loc):
        if isinstance(part, int) or mapping_key:  # a list index or a dict key: stays in the key
            key.append(str(part))
            mapping_key = False
            continue
        by_tag = {tag_of(c): c for c in candidates}
        if len(candidates) > 1 and part in by_tag:
            candidates = [by_tag[part]]
            continue
        key.append(str(part))
        field = candidates[0].model_fields.get(str(part)) if len(candidates) == 1 else None
        if i == len(loc) - 1:
            break
        if field is None:
            return ".".join(str(p) for p in loc), []
        candidates = models_in(field.annotation)
        mapping_key = typing.get_origin(_plain(field.annotation)) is dict
        if not candidates:
            return ".".join(key), []
    return ".".join(key), list(candidates[0].model_fields) if len(candidates) == 1 else []


def _plain(annotation: Any) -> Any:
    """`X | None` → X."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1 \
        else annotation


def _closest(word: str, valid: list[str]) -> list[str]:
    close = difflib.get_close_matches(word, valid, n=1)
    if not close:
        close = [v for v in valid if word.startswith(v) or v.startswith(word)][:1]
    return close


def error_lines(err: ValidationError, root: type[BaseModel], tagged: dict[str, str] | None = None,
                prefix: str = "") -> list[str]:
    """A validation error's lines, each naming the dotted key (with `prefix`) and for an unknown key the closest
    valid one. `tagged`: a tagged union's section → what its `name` picks, e.g. {"method": "method"}."""
    tagged = tagged or {"method": "method"}
    lines = []
    for e in err.errors():
        key, valid = _walk(tuple(e["loc"]), root)
        key = prefix + key if key else prefix.rstrip(".")
        if e["type"] == "task_settings":  # already one line per error, naming task.<key>
            lines.extend(f"  {line.strip()}" for line in e["msg"].splitlines())
        elif e["type"] == "extra_forbidden":
            close = _closest(key.rsplit(".", 1)[-1], valid)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            lines.append(f"  unknown key '{key}'{hint}; valid keys here: {', '.join(valid)}")
        elif e["type"] == "union_tag_invalid":
            kind = tagged.get(key.split(".")[0], "name")
            expected = ", ".join(t.strip("'") for t in e["ctx"]["expected_tags"].split(", "))
            lines.append(f"  {key}: unknown {kind} {e['ctx']['tag']!r}; choose one of {expected}")
        elif e["type"] == "value_error" and not key:
            lines.append(f"  {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return lines


def format_errors(err: ValidationError, source: str, root: type[BaseModel] = RunConfig, what: str = "configuration",
                  tagged: dict[str, str] | None = None) -> str:
    """A recipe's validation errors, one line each, naming the dotted key (and for an unknown key the closest
    valid one). `tagged`: a tagged union's section → what its `name` picks, e.g. {"method": "method"}."""
    return "\n".join([f"{source}: invalid {what}", *error_lines(err, root, tagged)])


def union_members(field) -> list[type[BaseModel]]:
    """The settings classes a field may hold: a registry-backed union's members (`task:`), else its annotation's."""
    for marker in field.metadata:
        if isinstance(marker, TaskUnion):
            return marker.members()
    return models_in(field.annotation)


def with_method_name(raw: dict) -> dict:
    """A recipe's `method:` section without a name is full fine-tuning."""
    method = raw.get("method")
    if isinstance(method, dict) and "name" not in method:
        method["name"] = "full"
    return raw


def build_config(raw: dict, source: str = "config") -> RunConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a recipe must be a YAML mapping of sections, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(with_method_name(raw))
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


def read_recipe(path: str | Path, overrides: list[str] | None = None):
    """A recipe file's YAML with the dotted overrides applied, or a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return apply_overrides(raw, overrides or []) if isinstance(raw, dict) else raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    return build_config(read_recipe(path, overrides), source=str(path))


def load_recipe(path: str | Path, overrides: list[str] | None, cls: type[BaseModel]):
    """Any recipe schema (tokenizer, pretrain): YAML + dotted overrides, validated, errors naming the key."""
    raw = read_recipe(path, overrides)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping of sections, got {type(raw).__name__}")
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, str(path), cls)) from None


def dump_config(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
