"""Trust: training remedies (label smoothing, R-Drop, FGM/PGD, LLRD, EDA), robustness, explanations."""

import json
import random

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForTokenClassification

from tunecraft.assets import model_path
from tunecraft.cli import main
from tunecraft.config import TrainConfig, build_config
from tunecraft.data import LabelMap
from tunecraft.data.augment import augment_examples, synonym_lexicon
from tunecraft.data.readers import Example
from tunecraft.errors import ConfigError
from tunecraft.evaluate.explain import attribute_text, deletion_check, integrated_gradients, pad_baseline
from tunecraft.evaluate.robustness import expected_calibration_error, perturb, robustness
from tunecraft.methods import get_method
from tunecraft.models import load_tokenizer
from tunecraft.tasks import build_task
from tunecraft.train import train
from tunecraft.train.optim import build_optimizer
from tunecraft.train.regularizers import EmbeddingAdversary, LabelSmoothing, RDrop, config_plugins, symmetric_kl_sum
from tunecraft.trained import load_trained

from .conftest import recipe

classification = build_task("classification")

LABELS = LabelMap(["negative", "positive"])


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(model_path("minilm-l6"))


def _model(dropout=None):
    torch.manual_seed(0)
    return classification.build_model(model_path("minilm-l6"), LABELS, dropout)


def _batch(tokenizer, texts=("a gorgeous, witty film", "a dull and lifeless mess of a movie, sadly"), labels=(1, 0)):
    batch = dict(tokenizer(list(texts), padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor(labels)
    return batch


# -- label smoothing, R-Drop --------------------------------------------------------------------------

def test_label_smoothing_term_makes_the_loss_torchs_smoothed_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(5, 7, 3)
    labels = torch.randint(0, 3, (5, 7))
    labels[0, :3] = -100  # ignored positions (token classification) stay ignored

    class Out:
        pass

    out = Out()
    out.logits = logits
    batch = {"labels": labels}
    plain = F.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1), reduction="sum")
    total = plain + LabelSmoothing(0.2).loss(None, out, batch, None)
    expected = F.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1), reduction="sum", label_smoothing=0.2)
    torch.testing.assert_close(total, expected)
    assert not torch.allclose(total, plain)


def test_rdrop_term_is_zero_without_dropout_and_positive_with_it(tokenizer):
    batch = _batch(tokenizer)
    for dropout, zero in ((0.0, True), (0.3, False)):
        model = _model(dropout).train()
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        outputs = model(**inputs)
        rdrop = RDrop(alpha=1.0)
        term = rdrop.loss(model, outputs, batch, classification)
        if zero:  # both passes agree: no KL, and the two CE terms cancel
            assert abs(term.item()) < 1e-6 and rdrop.last_kl < 1e-7
        else:
            assert rdrop.last_kl > 1e-6
    a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    p, q = torch.softmax(a, -1), torch.softmax(b, -1)
    kl = 0.5 * ((p * (p / q).log()).sum() + (q * (q / p).log()).sum())
    torch.testing.assert_close(symmetric_kl_sum(a, b), kl)


# -- FGM / PGD ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_adversary_perturbs_the_embeddings_and_leaves_the_model_exactly_as_it_was(tokenizer, method):
    batch = _batch(tokenizer)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    model = _model(0.0).train()
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    seen = []
    emb = model.get_input_embeddings()
    adversary = EmbeddingAdversary(method, epsilon=0.5, alpha=0.2, steps=3)
    adversary.attach(model)
    emb.register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))

    clean_loss = classification.loss_sum(model(**inputs), batch)
    clean_loss.backward()
    clean_grad = model.classifier.weight.grad.clone()
    adversary.after_backward(model, batch, classification, lambda loss: loss.backward())

    passes = 2 if method == "fgm" else 4  # clean + (PGD: 2 inner steps) + the final adversarial pass
    assert len(seen) == passes
    delta = adversary.last_delta
    torch.testing.assert_close(seen[-1] - seen[0], delta, atol=1e-6, rtol=0)
    norms = delta.flatten(1).norm(dim=1)
    if method == "fgm":
        torch.testing.assert_close(norms, torch.full_like(norms, 0.5), atol=1e-4, rtol=0)
    else:
        assert (norms <= 0.5 + 1e-5).all() and (norms > 0.1).all()
    pad = batch["attention_mask"] == 0
    assert pad.any() and delta[pad].abs().max() == 0  # padding is never perturbed
    assert not torch.equal(model.classifier.weight.grad, clean_grad)  # the adversarial loss was backpropagated

    for name, value in model.state_dict().items():  # weights never written
        assert torch.equal(value, weights[name]), name
    model(**inputs)
    assert torch.equal(seen[-1], seen[0])  # the next pass sees the clean embeddings again
    assert adversary.delta is None


def test_step_plugins_follow_the_config():
    assert not config_plugins(TrainConfig(), _model())
    cfg = TrainConfig(label_smoothing=0.1, rdrop={"alpha": 0.5}, adversarial={"method": "pgd", "steps": 2})
    kinds = [type(p) for p in config_plugins(cfg, _model())]
    assert kinds == [LabelSmoothing, RDrop, EmbeddingAdversary]


# -- layer-wise LR decay --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["full", "lora"])
def test_layer_wise_lr_decay_gives_each_layer_its_lr(method):
    model = _model()
    m = get_method(method)
    model = m.apply(model, m.Config(), classification)
    cfg = TrainConfig(lr=1.0, layer_lr_decay=0.5)
    lr_of = {id(p): g["lr"] for g in build_optimizer(model, cfg).param_groups for p in g["params"]}
    seen = set()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if ".encoder.layer." in name:
            i = int(name.split(".encoder.layer.")[1].split(".")[0])
            expected = 0.5 ** (6 - i)
        elif ".embeddings." in name:
            expected = 0.5 ** 7
        else:  # pooler and classifier head
            expected = 1.0
        assert lr_of[id(param)] == pytest.approx(expected), name
        seen.add(expected)
    assert len(seen) == (8 if method == "full" else 7)  # LoRA leaves the embeddings frozen
    plain = build_optimizer(model, TrainConfig(lr=1.0))
    assert {g["lr"] for g in plain.param_groups} == {1.0}


# -- augmentation ---------------------------------------------------------------------------------------

def test_augmentation_is_reproducible_by_seed_and_keeps_labels():
    examples = [Example(text="a great and funny film with a terrible ending", label="positive"),
                Example(text="the story is slow but the music is wonderful", label="negative")]
    cfg = build_config({"data": {"augment": {"copies": 3, "alpha": 0.2}}}).data.augment
    a, b = augment_examples(examples, cfg, seed=1), augment_examples(examples, cfg, seed=1)
    assert [e.text for e in a] == [e.text for e in b]
    assert len(a) == 2 + 6 and a[:2] == examples
    assert [e.label for e in a[2:]] == ["positive"] * 3 + ["negative"] * 3
    assert any(e.text not in {x.text for x in examples} for e in a[2:])
    other = augment_examples(examples, cfg, seed=2)
    assert [e.text for e in other] != [e.text for e in a]
    assert augment_examples(examples, build_config({}).data.augment, seed=1) is examples  # off by default
    lexicon = synonym_lexicon()
    assert "superb" in lexicon["great"] and "great" in lexicon["superb"]


@pytest.mark.slow
def test_remedies_train_end_to_end_and_augment_only_the_training_split(tmp_path):
    config = recipe(tmp_path, "remedies", method={"name": "full"},
                    data={"max_train_samples": 48, "max_eval_samples": 24, "augment": {"copies": 2}},
                    train={"max_steps": 3, "batch_size": 16, "label_smoothing": 0.1, "layer_lr_decay": 0.9,
                           "adversarial": {"method": "fgm"}, "rdrop": {"alpha": 0.5}})
    summary = train(config)
    assert summary["augmented_train_examples"] == 96
    assert summary["sizes"] == {"train": 48, "validation": 24, "test": 24}
    logged = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in logged if r["type"] == "train")
    # the test predictions are of the original test texts, none augmented
    from tunecraft.data import load_classification_data

    test = load_classification_data(config.data).test
    predicted = [json.loads(line)["text"] for line in (config.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert predicted == [e.text for e in test]


# -- perturbations, calibration -------------------------------------------------------------------------

def test_perturbation_suite_makes_the_intended_changes():
    examples = [Example(text="The film is wonderful , and the actors shine .", label="positive"),
                Example(text="It isn't funny at all .", label="negative"),
                Example(text="A slow film but the ending is great .", label="positive")]
    labels = ["negative", "positive"]
    typo = perturb(examples, "typos", labels, seed=3)
    for i, ex in typo:
        before, after = examples[i].text.split(), ex.text.split()
        changed = [(b, a) for b, a in zip(before, after) if b != a]
        assert len(after) == len(before) and len(changed) == max(1, round(0.1 * len(before)))
        assert all(abs(len(a) - len(b)) <= 1 and a.lower() != b.lower() for b, a in changed)
    assert perturb(examples, "typos", labels, seed=3) == typo  # reproducible
    assert [ex.text for _, ex in perturb(examples, "casing", labels)][0] == examples[0].text.upper()
    assert perturb(examples, "punctuation", labels)[0][1].text == "The film is wonderful and the actors shine"
    for i, ex in perturb(examples, "word-drop", labels, seed=1):
        n = len(examples[i].text.split())
        assert len(ex.text.split()) == n - max(1, round(0.1 * n))
    negated = perturb(examples, "negation", labels)
    assert [(i, ex.text, ex.label) for i, ex in negated] == [
        (0, "The film is not wonderful , and the actors shine .", "negative"),
        (1, "It is funny at all .", "positive")]  # the 'but' sentence is left out
    assert perturb(examples, "negation", ["sports", "politics"]) == []  # no polarity: no negation test
    assert all(ex.label == examples[i].label for i, ex in typo)


def test_expected_calibration_error_on_a_hand_example():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])
    labels = [0, 0, 1, 1]
    # bins of 0.25: (0.75, 1] holds 0.9 (right) and 0.8 (wrong): |0.5 - 0.85| * 2/4 = 0.175;
    # (0.5, 0.75] holds 0.7 and 0.6, both right: |1 - 0.65| * 2/4 = 0.175
    result = expected_calibration_error(probs, labels, bins=4)
    assert result["ece"] == pytest.approx(0.35, abs=1e-6)
    assert [r["count"] for r in result["table"]] == [2, 2]
    perfect = expected_calibration_error(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), [0, 1], bins=10)
    assert perfect["ece"] == pytest.approx(0.0)


@pytest.mark.slow
def test_robustness_report_on_a_trained_run(lora_run):
    run_dir, _ = lora_run
    result = robustness(run_dir, max_examples=40)
    assert set(result["ood"]) == {"amazon", "tweets", "nyt"}
    assert all(r["samples"] == 40 for r in result["ood"].values())
    assert set(result["perturbations"]) == {"typos", "casing", "punctuation", "word-drop", "negation"}
    assert result["perturbations"]["negation"]["samples"] > 0
    # the bundled MiniLM is uncased: upper-casing cannot change a prediction
    assert result["perturbations"]["casing"]["drop"] == 0
    assert 0 <= result["calibration"]["ece"] <= 1
    saved = json.loads((run_dir / "robustness" / "robustness.json").read_text())
    assert saved["clean"] == result["clean"]
    assert (run_dir / "robustness" / "reliability.png").stat().st_size > 1000
    report = (run_dir / "report.md").read_text()
    assert "## Robustness" in report and "perturbed: typos" in report and "out of domain: nyt" in report
    assert "## Results on the test split" in report  # the training report is still all there


# -- explanations -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_integrated_gradients_satisfy_completeness(lora_run, tokenizer):
    trained = load_trained(lora_run[0])
    attr = attribute_text(trained.model, trained.tokenizer, trained.meta["labels"],
                          "a gorgeous, witty film that never drags", steps=64)
    gap = attr.score - attr.baseline_score
    assert abs(sum(attr.scores) - gap) <= 0.01 * max(1.0, abs(gap))
    assert attr.scores[0] == 0 and attr.scores[-1] == 0  # [CLS] and [SEP] are the same in the baseline
    assert len(attr.tokens) == len(attr.scores)
    # a per-token target (token classification: logits [batch, sequence, classes]) uses the same function
    torch.manual_seed(0)
    tagger = AutoModelForTokenClassification.from_pretrained(str(model_path("minilm-l6")), num_labels=3).eval()
    enc = tokenizer("Paris is lovely", return_tensors="pt")
    scores, f_in, f_base, delta = integrated_gradients(tagger, enc["input_ids"], enc["attention_mask"], (1, 2),
                                                       pad_baseline(enc["input_ids"], tokenizer), steps=64)
    assert abs(float(scores.sum()) - (f_in - f_base)) <= 0.01 * max(1.0, abs(f_in - f_base))


@pytest.mark.slow
def test_explain_cli_prints_attributions_and_writes_html(lora_run, tmp_path, capsys):
    out = tmp_path / "why.html"
    assert main(["explain", str(lora_run[0]), "a gorgeous, witty film", "--html", str(out), "--steps", "16"]) == 0
    printed = capsys.readouterr().out
    assert "prediction:" in printed and "gorgeous" in printed and f"html: {out}" in printed
    page = out.read_text()
    assert page.startswith("<!doctype html>") and page.count("<span") == 7  # [CLS] a gorgeous , witty film [SEP]
    assert main(["explain", str(lora_run[0]), "a film", "--target", "neutral"]) == 2
    assert "unknown target label 'neutral'" in capsys.readouterr().err


@pytest.mark.slow
def test_deleting_top_attributed_tokens_hurts_more_than_random_ones(lora_run):
    run_dir, _ = lora_run
    trained = load_trained(run_dir)
    texts = [json.loads(line)["text"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    texts = random.Random(0).sample(texts, 16)
    result = deletion_check(trained.model, trained.tokenizer, texts, k=2, steps=12)
    assert result["texts"] >= 12
    assert result["top_drop"] > result["random_drop"] + 0.02, result


# -- configuration -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, key", [
    ({"train": {"adversarial": {"method": "fgsm"}}}, "train.adversarial.method"),
    ({"train": {"label_smoothing": 1.5}}, "train.label_smoothing"),
    ({"train": {"rdrop": {"alpha": -1}}}, "train.rdrop.alpha"),
    ({"train": {"layer_lr_decay": 0}}, "train.layer_lr_decay"),
    ({"data": {"augment": {"ops": ["shuffle"]}}}, "data.augment.ops"),
    ({"data": {"augment": {"copies": -1}}}, "data.augment.copies"),
])
def test_bad_remedy_values_are_config_errors_naming_the_key(raw, key):
    with pytest.raises(ConfigError) as err:
        build_config(raw)
    assert key in str(err.value)


def test_remedy_keys_are_off_by_default_and_typos_are_named():
    train_cfg = build_config({}).train
    assert train_cfg.label_smoothing == 0 and train_cfg.rdrop.alpha == 0
    assert train_cfg.adversarial.method == "none" and train_cfg.layer_lr_decay is None
    with pytest.raises(ConfigError) as err:
        build_config({"train": {"rdrop": {"alfa": 1.0}}})
    assert "unknown key 'train.rdrop.alfa'" in str(err.value) and "did you mean 'alpha'" in str(err.value)
