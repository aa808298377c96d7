"""Log-probabilities of completions given prompts, and the reference model they are compared against."""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..errors import TunecraftError


def encode_completions(tokenizer, prompts: list[str], completions: list[str], max_length: int,
                       ) -> tuple[list[list[int]], list[list[int]], int]:
    """Token ids of prompt + completion and a mask that is 1 on the completion's tokens. A row longer than
    `max_length` keeps its whole completion and loses the prompt's start (the end of the prompt is what the
    answer depends on most); a completion that alone exceeds it is cut at its end. Returns (ids, masks,
    number of rows cut)."""
    ids_rows, mask_rows, cut = [], [], 0
    for prompt, completion in zip(prompts, completions):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"]
        if len(p) + len(c) > max_length:
            cut += 1
            c = c[: max_length - 1]
            p = p[len(p) - (max_length - len(c)):] if max_length > len(c) else []
        ids_rows.append(p + c)
        mask_rows.append([0] * len(p) + [1] * len(c))
    return ids_rows, mask_rows, cut


def pad_rows(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """[B, T-1]: the log-probability of each row's token t+1 after its tokens up to t, the logits divided by
    `temperature` (as a sampler at that temperature saw them)."""
    logits = logits[:, :-1].float() / temperature
    return -F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")


def completion_token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                              temperature: float = 1.0) -> torch.Tensor:
    """Per token (see `token_logprobs`): what the clipped ratio and the per-token KL of online RL read."""
    return token_logprobs(model(input_ids=input_ids, attention_mask=attention_mask).logits, input_ids, temperature)


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        completion_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the summed log-probability of the completion's tokens, and their count. Right-padded rows."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return sequence_logprobs(logits, input_ids, completion_mask)


def sequence_logprobs(logits: torch.Tensor, input_ids: torch.Tensor,
                      completion_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`completion_logprobs` from a forward pass already made (the training loop's)."""
    token_logp = token_logprobs(logits, input_ids)
    mask = completion_mask[:, 1:].to(token_logp.dtype)
    return (token_logp * mask).sum(-1), mask.sum(-1)


@contextmanager
def reference_of(model):
    """The model as it was before training, without a second copy: a PEFT model's base with its adapters off.
    Methods that change the base weights (full fine-tuning, freeze) have no such view; callers then use
    reference log-probs computed before training (offline objectives) or a frozen copy."""
    inner = getattr(model, "module", model)  # DDP / accelerate wrapper
    if not hasattr(inner, "disable_adapter"):
        raise TunecraftError("this model has no adapter to switch off, so it cannot serve as its own reference; "
                             "use an adapter method (lora, ...) or precomputed reference log-probs")
    was_training = inner.training
    inner.eval()
    try:
        with inner.disable_adapter(), torch.no_grad():
            yield inner
    finally:
        inner.train(was_training)
