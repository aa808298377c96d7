"""Typed recipes for `tunecraft tokenizer` and `tunecraft pretrain` (same YAML + dotted-override rules as train)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ..config import EarlyStoppingConfig, SplitConfig, TrainConfig
from ..runs import RunRecipe
from ..settings import Strict


class CorpusConfig(Strict):
    sources: list[str] = []
    """Bundled corpora: wiki-en, pd-text (People's Daily without the pd-ner test lines), zh-reviews (without
    the zh-reviews sentiment test texts), and the texts of mr (training split only), amazon, tweets."""
    files: list[str] = []
    """The user's UTF-8 text files: one sentence per line, a blank line between documents."""
    heldout: float = Field(0.02, ge=0.0, lt=0.5)
    """Fraction of documents kept out of training, for held-out perplexity / tokenizer statistics."""
    seed: int = 42
    max_documents: int | None = Field(None, ge=1)
    """Keep only this many training documents (tests, quick demos)."""
    test_split: SplitConfig = SplitConfig()
    """The split of the labelled sets behind pd-text (pd-ner) and zh-reviews (zh-reviews sentiment) whose test
    part the corpus leaves out: keep it equal to the fine-tuning recipes' data.split."""


class TokenizerRecipe(Strict):
    name: str = "tokenizer"
    output_dir: str = "runs"
    kind: Literal["wordpiece", "bpe", "chars"] = "wordpiece"
    """wordpiece: BERT-style (for encoders); bpe: byte-level, GPT-2 style (no unknown tokens); chars: one
    token per character seen at least min_frequency times (Chinese)."""
    vocab_size: int = Field(8000, ge=100)
    min_frequency: int = Field(2, ge=1)
    lowercase: bool = False
    corpus: CorpusConfig = CorpusConfig()

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


class PretrainModelConfig(Strict):
    base: str = "scratch:encoder-tiny"
    """scratch:<size> (encoder-tiny|mini|small, decoder-tiny|mini), or an existing model (bundled name or
    folder) to continue pre-training (domain adaptation); its tokenizer comes with it."""
    tokenizer: str | None = None
    """For scratch models: a tokenizer folder (from `tunecraft tokenizer`), or `chars` (built from the corpus)."""
    max_length: int = Field(128, ge=8, le=4096)


class ObjectiveConfig(Strict):
    name: Literal["mlm", "clm"] = "mlm"
    """mlm: masked language modelling (encoders); clm: next-token prediction with sequence packing (decoders)."""
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)
    whole_word: bool = False
    """Mask every token of a chosen word together (whole-word masking)."""
    sentence_pair: Literal["nsp", "sop"] | None = None
    """MLM plus a sentence-pair task: nsp (is B the next segment? BERT) or sop (are A, B in order? ALBERT)."""


class PretrainRecipe(RunRecipe):
    name: str = "pretrain"
    model: PretrainModelConfig = PretrainModelConfig()
    corpus: CorpusConfig = CorpusConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    train: TrainConfig = TrainConfig(epochs=1, lr=1e-3, batch_size=32,
                                     early_stopping=EarlyStoppingConfig(metric="loss", mode="min"))
    prompts: list[str] = []
    """Causal LM: prompts to continue in the report (generation samples)."""
    mfu_probe: bool = True
    """Measure the machine's bf16 matmul peak at start and log MFU (model FLOP/s / peak) with each train log."""

    @model_validator(mode="after")
    def _defaults(self):
        if self.train.early_stopping.metric is None:
            self.train.early_stopping.metric = "loss"
            self.train.early_stopping.mode = "min"
        if self.objective.name == "clm" and self.objective.sentence_pair:
            raise ValueError("objective.sentence_pair is for mlm, not clm")
        return self
