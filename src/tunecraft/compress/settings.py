"""The settings of the compress jobs (distill, prune, quantize, onnx_export) and of one `compress` call.
Kept apart from the jobs, which import torch, so that the command line reads them cheaply."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..settings import Strict, borrow


class DistillSettings(Strict):
    layers: int = Field(3, ge=1)
    """Transformer layers of the student."""
    init: Literal["teacher", "scratch"] = "teacher"
    """teacher: copy the embeddings, head and every other teacher layer; scratch: random weights."""
    layer_map: list[int] | None = None
    """Which teacher layers the student starts from (default: evenly spaced from the first, 0,2,4 of 6)."""
    temperature: float = Field(2.0, gt=0)
    """Distillation temperature T: both distributions are softened by it before the KL term."""
    weight: float = Field(1.0, ge=0)
    """Weight of the T²-scaled KL term; the hard-label cross-entropy has weight 1."""
    epochs: float = Field(3, gt=0)
    """Epochs of distillation training over the run's training split."""
    max_steps: int | None = Field(None, ge=1)
    """Optimizer steps of distillation training; overrides epochs when set."""
    lr: float = Field(1e-4, gt=0)
    """Learning rate of the student."""
    batch_size: int = Field(32, ge=1)


class PruneSettings(Strict):
    kind: Literal["unstructured", "heads", "layers"]
    sparsity: float = Field(0.5, gt=0, lt=1)
    """unstructured: the fraction of the encoder's linear weights set to zero (global magnitude)."""
    heads: float = Field(0.25, gt=0, lt=1)
    """heads: the fraction of all attention heads removed (lowest importance first; each layer keeps one)."""
    layers: int = Field(2, ge=1)
    """layers: how many whole transformer layers are removed (those whose removal costs least)."""
    importance_samples: int = Field(256, ge=8)
    """Training examples used to score heads, validation examples used to score layers."""
    recover_steps: int = Field(0, ge=0)
    """Optimizer steps of recovery fine-tuning after pruning (0: none)."""
    recover_lr: float = Field(3e-5, gt=0)
    """Learning rate of the recovery fine-tuning."""


class QuantizeSettings(Strict):
    per_channel: bool = True
    """One scale per output channel of each weight matrix (off: one per matrix)."""


class OnnxSettings(Strict):
    quantize: Literal["none", "dynamic", "static"] = "none"
    tolerance: float = Field(1e-4, gt=0)
    """fp32 export: the largest |logit difference| to PyTorch allowed on the check examples."""
    calibration_samples: int = Field(256, ge=1)
    """static int8: training examples whose activation ranges set the quantization scales."""


class Options(Strict):
    """Settings of one `compress` call: those its variants share (each borrowed, with its default and doc,
    from the job settings class that uses it) and how the variants are measured. `tunecraft compress`'s
    options are generated from these fields."""

    distill_epochs: float = borrow(DistillSettings, "epochs")
    distill_max_steps: int | None = borrow(DistillSettings, "max_steps")
    distill_lr: float = borrow(DistillSettings, "lr")
    temperature: float = borrow(DistillSettings, "temperature")
    distill_weight: float = borrow(DistillSettings, "weight")
    recover_steps: int = borrow(PruneSettings, "recover_steps")
    recover_lr: float = borrow(PruneSettings, "recover_lr")
    calibration_samples: int = borrow(OnnxSettings, "calibration_samples")
    onnx_tolerance: float = borrow(OnnxSettings, "tolerance")
    threads: int = Field(2, ge=1)
    """torch / ONNX Runtime threads while measuring."""
    latency_samples: int = Field(200, ge=1)
    """Batch-1 sentences per measuring round."""
    rounds: int = Field(5, ge=1)
    """Interleaved measuring rounds over all variants."""
    llm_conversations: int = Field(200, ge=1)
    """Causal-LM runs: held-out conversations whose learned tokens give the perplexity."""
    llm_prompts: int = Field(16, ge=1)
    """Causal-LM runs: held-out prompts whose greedy answers are compared with the original's."""
    llm_timed_prompts: int = Field(4, ge=1)
    """Causal-LM runs: prompts per round timed for tokens/s and time to first token (batch 1)."""
