"""MaskedDropout (train/dropout.py): the law of nn.Dropout, exact scaling and gradients, seeded, swapped in and out;
the attention function that draws the attention probabilities' dropout with the same masks."""

import math

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from tunecraft.train.dropout import ATTENTION, MaskedDropout, attention_with_masked_dropout, keep_mask, masked_dropout


def test_keep_mask_keeps_each_element_with_probability_one_minus_p():
    torch.manual_seed(0)
    n = 2_000_001  # not a multiple of 4: the last element comes from a quarter of a 64-bit draw
    for p in (0.1, 0.5, 0.9):
        kept = keep_mask(torch.Size([n]), p).double().mean().item()
        sigma = math.sqrt(p * (1 - p) / n)
        assert abs(kept - (1 - p)) < 5 * sigma, (p, kept)


def test_keep_mask_is_reproduced_by_the_seed_and_differs_without_it():
    torch.manual_seed(7)
    a = keep_mask(torch.Size([4, 33, 17]), 0.1)
    b = keep_mask(torch.Size([4, 33, 17]), 0.1)
    torch.manual_seed(7)
    assert torch.equal(keep_mask(torch.Size([4, 33, 17]), 0.1), a)
    assert not torch.equal(a, b)


def test_output_and_gradient_are_the_kept_elements_scaled_exactly():
    layer = MaskedDropout(0.25).train()
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(8, 5, 16, dtype=dtype, requires_grad=True)
        torch.manual_seed(3)
        y = layer(x)
        torch.manual_seed(3)
        keep = keep_mask(x.shape, 0.25)
        assert torch.equal(y, torch.where(keep, x * (1 / 0.75), torch.zeros_like(x)))
        grad = torch.randn_like(y)
        y.backward(grad)
        assert torch.equal(x.grad, torch.where(keep, grad * (1 / 0.75), torch.zeros_like(grad)))


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(3, 4)
    assert MaskedDropout(0.5).eval()(x) is x
    assert MaskedDropout(0.0).train()(x) is x
    assert torch.equal(MaskedDropout(1.0).train()(x), torch.zeros_like(x))


def test_the_swap_replaces_every_dropout_and_gives_the_originals_back():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1),
                                torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.ReLU())).train()
    originals = [model[1], model[2][0]]
    with masked_dropout(model) as swapped:
        assert swapped == 2
        assert [type(model[1]), type(model[2][0])] == [MaskedDropout, MaskedDropout]
        assert [model[1].p, model[2][0].p] == [0.1, 0.3]
        model.eval()  # a mid-training evaluation switches the swapped layers...
    assert [model[1], model[2][0]] == originals
    assert not originals[0].training  # ...and the originals come back in the mode the model is in
    with masked_dropout(model, enabled=False) as swapped:
        assert swapped == 0 and model[1] is originals[0]


class _Heads(torch.nn.Module):
    """What the attention functions read off the attention module."""

    def __init__(self, groups: int, causal: bool):
        super().__init__()
        self.num_key_value_groups, self.is_causal = groups, causal


def _qkv(groups: int):
    torch.manual_seed(0)
    return (torch.randn(2, 4, 6, 8), torch.randn(2, 4 // groups, 6, 8), torch.randn(2, 4 // groups, 6, 8))


_PADDED = torch.ones(2, 1, 6, 6, dtype=torch.bool)
_PADDED[1, ..., 4:] = False  # the second sequence's last two keys are padding


@pytest.mark.parametrize("groups,causal,mask", [(1, False, _PADDED), (2, True, None), (1, True, _PADDED.tril()),
                                                (1, False, torch.zeros(2, 1, 6, 6).masked_fill(~_PADDED, -1e9))])
def test_attention_without_dropout_is_sdpa_and_with_a_vanishing_p_computes_the_same(groups, causal, mask):
    module, (q, k, v) = _Heads(groups, causal), _qkv(groups)
    expected, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0, scaling=0.3)
    out, _ = attention_with_masked_dropout(module, q, k, v, mask, dropout=0.0, scaling=0.3)
    assert torch.equal(out, expected)  # no dropout: SDPA itself
    # p = 1e-12 keeps every element (threshold round(p·2¹⁶) = 0): the eager path, masks, causality, GQA and the
    # scale must give SDPA's numbers
    out, _ = attention_with_masked_dropout(module, q, k, v, mask, dropout=1e-12, scaling=0.3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_under_bf16_autocast_attention_is_computed_in_fp32_as_sdpa_math_does():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    module, (q, k, v) = _Heads(1, False), (2 * t.bfloat16() for t in _qkv(1))
    with sdpa_kernel(SDPBackend.MATH):  # the path SDPA takes on CPU when there is dropout
        expected, _ = sdpa_attention_forward(module, q, k, v, _PADDED, dropout=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = attention_with_masked_dropout(module, q, k, v, _PADDED, dropout=1e-12)
    assert out.dtype == torch.bfloat16
    # within one bf16 rounding of the output (scores rounded to bf16 before the softmax are off by several)
    assert (out.float() - expected.float()).abs().max() <= 2**-8 * expected.float().abs().max()


def test_attention_dropout_drops_probabilities_with_the_seeded_keep_mask():
    module, (q, k, v) = _Heads(1, False), _qkv(1)
    q.requires_grad_(True)
    torch.manual_seed(5)
    out, _ = attention_with_masked_dropout(module, q, k, v, _PADDED, dropout=0.3)
    torch.manual_seed(5)
    keep = keep_mask(torch.Size([2, 4, 6, 6]), 0.3)
    probs = torch.softmax((q @ k.transpose(2, 3) * 8**-0.5).masked_fill(~_PADDED, torch.finfo(q.dtype).min), -1)
    expected = ((probs * keep / 0.7) @ v).transpose(1, 2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    out.sum().backward()  # the gradient flows through the kept probabilities only
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_the_swap_runs_sdpa_models_on_the_masked_attention_and_evaluation_is_unchanged():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.5)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    assert model.config._attn_implementation == "sdpa"
    ids, mask = torch.randint(0, 50, (3, 7)), torch.ones(3, 7, dtype=torch.long)
    mask[2, 5:] = 0
    before = model(input_ids=ids, attention_mask=mask).logits
    with masked_dropout(model):
        assert model.config._attn_implementation == ATTENTION
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, before)  # eval: SDPA's own path
        model.train()
        torch.manual_seed(1)
        a = model(input_ids=ids, attention_mask=mask).logits
        torch.manual_seed(1)
        b = model(input_ids=ids, attention_mask=mask).logits
        c = model(input_ids=ids, attention_mask=mask).logits
        assert torch.equal(a, b) and not torch.equal(a, c)  # the attention dropout draws, seeded
    assert model.config._attn_implementation == "sdpa"
    with masked_dropout(model, attention=False):
        assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("padded", [False, True])
def test_a_causal_model_in_training_attends_as_sdpa_does(padded):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attention_dropout=1e-12)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).train()  # dropout p = 1e-12: the masked path, every element kept
    ids, mask = torch.randint(0, 64, (3, 9)), torch.ones(3, 9, dtype=torch.long)
    if padded:
        mask[1, :3] = 0  # left padding
        mask[2, 7:] = 0  # right padding
    expected = model(input_ids=ids, attention_mask=mask).logits
    with masked_dropout(model):
        out = model(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    torch.testing.assert_close(out[keep], expected[keep], rtol=1e-4, atol=1e-5)
