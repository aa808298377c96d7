"""Load a base model's folder and tokenizer (bundled asset or local HF folder); find a trained run's model folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import transformers
from transformers import AutoTokenizer

from ..assets import model_path
from ..errors import TunecraftError

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


SCRATCH = "scratch:"


def resolve_base(name: str) -> Path:
    return model_path(name)


def load_tokenizer(path: Path):
    return AutoTokenizer.from_pretrained(str(path))


@dataclass
class Base:
    """What a run starts from: pretrained weights in `path`, or a fresh model of `config` (scratch)."""

    tokenizer: object
    path: Path | None = None
    config: object = None
    name: str = ""


def prepare_base(model_cfg, training_texts) -> Base:
    """The base model named by model.base; `training_texts()` is called only to build a `chars` tokenizer."""
    name = model_cfg.base
    if not name.startswith(SCRATCH):
        if model_cfg.tokenizer:
            raise TunecraftError(f"model.tokenizer: a pretrained base ({name}) brings its own tokenizer; "
                                 "model.tokenizer is for scratch:<size> bases")
        path = resolve_base(name)
        return Base(load_tokenizer(path), path=path, name=name)
    from .sizes import ENCODER_SIZES, char_tokenizer, encoder_config

    size = name[len(SCRATCH):]
    if size not in ENCODER_SIZES:
        raise TunecraftError(f"model.base: unknown size '{size}'; sizes: {', '.join(ENCODER_SIZES)}")
    if not model_cfg.tokenizer:
        raise TunecraftError("model.tokenizer: a scratch model needs a tokenizer: a tokenizer folder, or 'chars'")
    if model_cfg.tokenizer == "chars":
        tokenizer = char_tokenizer(training_texts())
    elif Path(model_cfg.tokenizer).is_dir():
        tokenizer = load_tokenizer(Path(model_cfg.tokenizer))
    else:
        raise TunecraftError(f"model.tokenizer: '{model_cfg.tokenizer}' is neither 'chars' nor a tokenizer folder")
    return Base(tokenizer, config=encoder_config(size, len(tokenizer), model_cfg.max_length), name=name)


def instantiate(model_class, base: Base | Path, label_map, dropout: float | None = None):
    """A model with a fresh task head for `label_map`: from the base's weights, or randomly initialised."""
    overrides = {"num_labels": len(label_map.labels), "id2label": label_map.id2label,
                 "label2id": label_map.label2id}
    if dropout is not None:
        overrides.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, classifier_dropout=dropout)
    if isinstance(base, Path) or base.path is not None:
        return model_class.from_pretrained(str(base if isinstance(base, Path) else base.path), **overrides)
    config = base.config.__class__.from_dict({**base.config.to_dict(), **overrides})
    return model_class.from_config(config)


@dataclass
class TrainedModel:
    model: object
    tokenizer: object
    meta: dict
    path: Path
