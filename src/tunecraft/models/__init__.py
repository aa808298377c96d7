"""Load a base model's folder and processor (bundled asset or local HF folder); find a trained run's model folder.

The processor is what turns raw inputs into model features: a tokenizer for text, an image processor, a feature
extractor (audio) or a multimodal processor (transformers' Auto*Processor families), or None for a model that takes
ready features. Text code reads the tokenizer through `tokenizer_of` (`Base.tokenizer`, `TrainedModel.tokenizer`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import transformers
from transformers import AutoProcessor, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import FEATURE_EXTRACTOR_NAME, IMAGE_PROCESSOR_NAME, PROCESSOR_NAME

from ..assets import model_path
from ..errors import TunecraftError

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


SCRATCH = "scratch:"


def resolve_base(name: str) -> Path:
    return model_path(name)


NON_TEXT_FILES = (PROCESSOR_NAME, IMAGE_PROCESSOR_NAME, FEATURE_EXTRACTOR_NAME)
"""A folder holding one of these has a processor beyond a tokenizer (multimodal, image or audio)."""
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model")


def load_tokenizer(path: Path):
    return AutoTokenizer.from_pretrained(str(path))


def load_processor(path: Path):
    """The processor a model folder holds: transformers' AutoProcessor where the folder has a processor, image
    processor or feature extractor config; a tokenizer-only folder through AutoTokenizer (exactly as text runs
    always loaded); None where it holds neither (a model over ready features)."""
    path = Path(path)
    if any((path / name).is_file() for name in NON_TEXT_FILES):
        return AutoProcessor.from_pretrained(str(path))
    if any((path / name).is_file() for name in TOKENIZER_FILES):
        return load_tokenizer(path)
    return None


def tokenizer_of(processor):
    """The text part of a processor: the processor itself for a tokenizer, its `tokenizer` for a multimodal
    processor, None for an image processor, a feature extractor or no processor."""
    if processor is None or isinstance(processor, PreTrainedTokenizerBase):
        return processor
    return getattr(processor, "tokenizer", None)


def pad_id_of(processor) -> int | None:
    """The id batches are padded with: the tokenizer's pad id; None where there is no tokenizer (nothing to pad)."""
    tokenizer = tokenizer_of(processor)
    return None if tokenizer is None else tokenizer.pad_token_id


class ProcessorParts:
    """The text part and pad id of what a base or a loaded run holds in `processor`."""

    processor: object

    @property
    def tokenizer(self):
        """The processor's text part (see tokenizer_of)."""
        return tokenizer_of(self.processor)

    @property
    def pad_id(self) -> int | None:
        return pad_id_of(self.processor)


@dataclass
class Base(ProcessorParts):
    """What a run starts from: pretrained weights in `path`, or a fresh model of `config` (scratch), and the
    `processor` that makes its features (a tokenizer for every text base)."""

    processor: object
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
        return with_chat_template(Base(load_processor(path), path=path, name=name), model_cfg.chat_template)
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
    base = Base(tokenizer, config=encoder_config(size, len(tokenizer), model_cfg.max_length), name=name)
    return with_chat_template(base, model_cfg.chat_template)


def with_chat_template(base: Base, choice: str | None) -> Base:
    """The base with model.chat_template set on its tokenizer (null: the tokenizer's own is kept)."""
    if choice is not None:
        from .chat_templates import apply_chat_template

        apply_chat_template(base.tokenizer, choice)
    return base


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
class TrainedModel(ProcessorParts):
    model: object
    processor: object
    """What the model folder holds to make features (models.load_processor); the tokenizer for text runs."""
    meta: dict
    path: Path
