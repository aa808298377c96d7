"""In-context few-shot classification with SmolLM2: the prompt, and label scoring that equals a plain
unpadded log-likelihood computation."""

import pytest
import torch

from tunecraft.config import build_config
from tunecraft.data.readers import Example
from tunecraft.evaluate.baselines import icl_prompt, in_context, label_log_likelihoods, run_icl_baselines
from tunecraft.models import load_tokenizer, resolve_base


@pytest.fixture(scope="module")
def lm():
    from transformers import AutoModelForCausalLM

    path = resolve_base("smollm2-135m")
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval(), load_tokenizer(path)


def test_prompt_lists_labels_examples_and_ends_before_the_label():
    prompt = icl_prompt(["negative", "positive"], [("awful", "negative"), ("lovely", "positive")], "fine film")
    assert prompt == ("Classify each text as one of: negative, positive.\n\nText: awful\nLabel: negative\n\n"
                      "Text: lovely\nLabel: positive\n\nText: fine film\nLabel:")


def test_label_scores_equal_unpadded_log_likelihoods(lm):
    model, tokenizer = lm
    prompt = icl_prompt(["negative", "positive"], [("an awful film", "negative")], "a gorgeous, witty film")
    labels = ["negative", "positive", "very positive indeed"]  # label lengths differ: rows are left-padded
    got = label_log_likelihoods(model, tokenizer, prompt, labels)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    want = []
    with torch.no_grad():
        for label in labels:
            ids = tokenizer(" " + label, add_special_tokens=False)["input_ids"]
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([prompt_ids + ids])).logits.float(), -1)[0]
            want.append(sum(logprobs[len(prompt_ids) - 1 + k, t] for k, t in enumerate(ids)))
    torch.testing.assert_close(got, torch.stack(want), atol=1e-4, rtol=1e-4)


def test_in_context_draws_examples_per_class_and_reports_mean_and_spread(lm):
    model, tokenizer = lm
    train = [Example("a wonderful, moving film", "positive"), Example("I loved every minute", "positive"),
             Example("a dull, lifeless mess", "negative"), Example("I hated every minute", "negative")]
    test = [Example("a delightful comedy", "positive"), Example("a boring disaster", "negative")]
    result = in_context(model, tokenizer, ["negative", "positive"], train, test, [1, 0], shots=1, seeds=2)
    assert len(result["accuracies"]) == 2 and result["metrics"]["samples"] == 2
    assert result["accuracy_mean"] == pytest.approx(sum(result["accuracies"]) / 2)


def test_in_context_baselines_are_off_unless_asked():
    assert run_icl_baselines(build_config({}), data=None) == []
