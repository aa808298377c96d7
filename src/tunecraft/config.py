"""Typed, validated run configuration: YAML recipes plus dotted overrides; errors name the key."""

from __future__ import annotations

import difflib
import logging
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from .align.settings import RlConfig
from .errors import ConfigError
from .methods import METHODS, MethodConfig
from .runs import RunRecipe
from .settings import Strict

logger = logging.getLogger("tunecraft")


class ModelConfig(Strict):
    base: str = "minilm-l6"
    """A bundled model name (see `tunecraft assets list`), a local Hugging Face model folder, or
    `scratch:<size>` for a randomly initialised model of a named size (see `tunecraft.models.sizes`)."""
    tokenizer: str | None = None
    """For scratch models: a tokenizer folder, or `chars` for one token per character of the training text."""
    max_length: int = Field(128, ge=8, le=4096)
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


class NerDataConfig(Strict):
    """Token classification (task: token_classification)."""

    token_column: int = 0
    """CoNLL files: the column of the tokens (0 = first)."""
    tag_column: int = -1
    """CoNLL files: the column of the tags (-1 = last)."""
    scheme: Literal["bio", "bioes"] = "bio"
    """The tag scheme the model predicts; input files in either scheme are converted to it."""
    on_invalid: Literal["repair", "error"] = "repair"
    """An I-/E- tag with no entity of its type to continue: start a new entity (with a warning), or stop."""
    label_subtokens: Literal["first", "all"] = "first"
    """Train on the first sub-token of each word only, or on all of them (predictions always read the first)."""
    stride: int = Field(32, ge=0)
    """Tokens shared by consecutive windows of a sentence longer than model.max_length."""
    strict: bool = False
    """Score entities in seqeval's strict mode (exact scheme-valid tag sequences) instead of conlleval's."""


class SftDataConfig(Strict):
    """Instruction-tuning data (task: causal_lm)."""

    format: Literal["auto", "messages", "sharegpt", "alpaca", "text"] = "auto"
    """JSONL rows with `messages` (OpenAI roles), `conversations` (ShareGPT from/value), Alpaca
    instruction/input/output, or `text`; auto tells them apart per row. A .txt file is plain text per line."""
    train_on: Literal["assistant", "all"] = "assistant"
    """Learn only the assistant's tokens (the prompt and the template's other parts take no loss), or all."""
    packing: bool = False
    """Join whole training examples into rows of up to model.max_length tokens (less padding)."""
    overlong: Literal["error", "drop", "truncate"] = "drop"
    """An example longer than model.max_length: stop with its file and line, drop it, or cut its end. Dropped
    and cut examples are counted in the log and in summary.json (truncated), never silently."""


class PreferenceDataConfig(Strict):
    """Preference data (task: preference): JSONL pairs or judged answers (data/preferences.py), or a server's
    feedback store (RUN/feedback.sqlite)."""

    kind: Literal["auto", "pairs", "judgements"] = "auto"
    """pairs (prompt/chosen/rejected) or judgements (prompt/completion/label); auto: told by each file."""
    overlong: Literal["error", "drop", "truncate"] = "drop"
    """A prompt + answer longer than model.max_length: stop with its file and line, drop the example (counted in
    the log and summary.json), or cut the prompt's start (the whole answer is kept)."""
    good_rating: int = 1
    """Feedback stores: a rating at or above this is a good answer, below it a bad one (1 for thumbs -1/1; 4 for
    a 1..5 scale)."""


class PreferenceConfig(Strict):
    """The offline preference objective (task: preference); its constants are TRL's (align/losses.py)."""

    objective: Literal["dpo", "ipo", "simpo", "orpo", "kto"] = "dpo"
    beta: float = Field(0.1, gt=0.0)
    """DPO/IPO/KTO: the strength of the pull toward the reference (IPO's τ); SimPO: the reward scale."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    """DPO only: the probability that a pair's label is flipped (conservative DPO)."""
    simpo_gamma: float = Field(0.5, ge=0.0)
    """SimPO: the target reward margin γ."""
    orpo_lambda: float = Field(0.1, gt=0.0)
    """ORPO: the weight λ of the odds-ratio term beside the chosen answer's NLL."""
    kto_desirable_weight: float = Field(1.0, gt=0.0)
    kto_undesirable_weight: float = Field(1.0, gt=0.0)


class GenerationSettings(Strict):
    """How causal_lm runs generate: held-out evaluation, the report's samples, predict and chat."""

    max_new_tokens: int = Field(48, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0)
    """0 is greedy decoding."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: list[str] = []
    """Strings that end a generated answer (it is cut before them)."""
    eval_samples: int = Field(32, ge=0)
    """Held-out answers generated for exact match and ROUGE-L (0: perplexity only)."""
    report_samples: int = Field(6, ge=0)
    """Of those, shown in the report beside the base model's answer to the same prompt."""
    batch_size: int = Field(16, ge=1)


class RewardModelSettings(Strict):
    """Reward models (task: reward_model): pairs scored by a scalar head, trained with the Bradley–Terry loss."""

    margin_scale: float = Field(0.0, ge=0.0)
    """The loss is −log σ(r_chosen − r_rejected − margin_scale × the pair's `margin`) (Llama 2's margin loss):
    pairs the data says differ more must be scored further apart. 0 ignores the margins; a pair without one
    counts as margin 0."""
    overlong: Literal["error", "drop", "truncate"] = "drop"
    """A pair whose chosen or rejected text (with its prompt) is longer than model.max_length tokens: stop with
    its file and line, drop the pair, or cut the texts to max_length (an encoder's prompt/answer pair loses
    tokens from the longer of the two first). Dropped and cut pairs are counted in the log and in summary.json
    (truncated). `predict` and `serve` always cut, and say so per text."""


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
    split: SplitConfig = SplitConfig()
    """Used for the splits that are not given as files."""
    max_train_samples: int | None = Field(None, ge=1)
    max_eval_samples: int | None = Field(None, ge=1)
    ner: NerDataConfig = NerDataConfig()
    sft: SftDataConfig = SftDataConfig()
    preference: PreferenceDataConfig = PreferenceDataConfig()
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _files_replace_the_bundled_set(self):
        # `train` wins over `dataset` when reading; the resolved config.yaml must not name a set never used
        # (robustness and plan --auto read it back)
        if self.train:
            self.dataset = None
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


class RunConfig(RunRecipe):
    task: str = "classification"
    """The task (tunecraft.tasks): classification, token_classification, causal_lm, reward_model, preference or rl."""
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    method: Annotated[MethodConfig, Field(discriminator="name")] = Field(
        default_factory=lambda: typing.get_args(MethodConfig)[0]()
    )
    train: TrainConfig = TrainConfig()
    baselines: BaselinesConfig = BaselinesConfig()
    tune: TuneConfig | None = None
    """Read by `tunecraft tune` only; `train` ignores it."""
    generation: GenerationSettings = GenerationSettings()
    reward_model: RewardModelSettings = RewardModelSettings()
    preference: PreferenceConfig = PreferenceConfig()
    """Read by task: preference only."""
    rl: RlConfig = RlConfig()
    """Read by task: rl only."""

    @model_validator(mode="after")
    def _task_defaults(self):
        from .tasks import TASKS

        if self.task not in TASKS:
            raise ValueError(f"task: unknown task '{self.task}'; tasks: {', '.join(TASKS)}")
        task = TASKS[self.task]
        es = self.train.early_stopping
        if es.metric is None:
            es.metric = task.EARLY_STOPPING[0]
        if es.metric not in task.METRICS:
            raise ValueError(f"train.early_stopping.metric: unknown metric '{es.metric}' for {self.task}; "
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
    """The dotted overrides applied to a recipe's YAML. One that changes `method.name` replaces the method: the
    recipe's method keys that the new method does not have are dropped, with a warning naming them (the ones
    given as overrides are kept and checked)."""
    before = (raw.get("method") or {}).get("name", "full") if isinstance(raw.get("method"), dict) else None
    overridden = set()
    for text in overrides:
        path, value = parse_override(text)
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
    method = raw.get("method")
    if isinstance(method, dict) and before is not None and method.get("name", "full") != before:
        _keep_keys_of_the_new_method(method, before, {p[1] for p in overridden if len(p) == 2 and p[0] == "method"})
    return raw


def _keep_keys_of_the_new_method(method: dict, before: str, overridden: set[str]) -> None:
    chosen = METHODS.get(method["name"])
    if chosen is None:  # validation names the unknown method and the valid ones
        return
    dropped = [k for k in method if k not in chosen.Config.model_fields and k not in overridden]
    for key in dropped:
        del method[key]
    if dropped:
        logger.warning("method.name=%s replaces the recipe's method %s: dropped %s, which %s does not have",
                       method["name"], before, ", ".join(f"method.{k}" for k in dropped), method["name"])


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


def format_errors(err: ValidationError, source: str, root: type[BaseModel] = RunConfig, what: str = "configuration",
                  tagged: dict[str, str] | None = None) -> str:
    """A recipe's validation errors, one line each, naming the dotted key (and for an unknown key the closest
    valid one). `tagged`: a tagged union's section → what its `name` picks, e.g. {"method": "method"}."""
    tagged = tagged or {"method": "method"}
    lines = [f"{source}: invalid {what}"]
    for e in err.errors():
        key, valid = _walk(tuple(e["loc"]), root)
        if e["type"] == "extra_forbidden":
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
    return "\n".join(lines)


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
