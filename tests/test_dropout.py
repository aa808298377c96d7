"""MaskedDropout (train/dropout.py): the law of nn.Dropout, exact scaling and gradients, seeded, swapped in and out."""

import math

import torch

from tunecraft.train.dropout import MaskedDropout, keep_mask, masked_dropout


def test_keep_mask_keeps_each_element_with_probability_one_minus_p():
    torch.manual_seed(0)
    n = 2_000_001  # odd: the last element comes from half a 64-bit draw
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
