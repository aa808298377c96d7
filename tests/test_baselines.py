import pytest
import torch

from tunecraft.config import build_config
from tunecraft.data.readers import Example
from tunecraft.errors import ConfigError
from tunecraft.evaluate.baselines import embed, prototypes, zero_shot
from tunecraft.experiment import experiment
from tunecraft.models import load_tokenizer, resolve_base


@pytest.fixture(scope="module")
def encoder():
    from transformers import AutoModel

    path = resolve_base("minilm-l6")
    return AutoModel.from_pretrained(str(path)), load_tokenizer(path)


def test_embeddings_are_unit_length_and_do_not_depend_on_batch_order(encoder):
    model, tokenizer = encoder
    texts = ["a gorgeous, witty film", "bad", "an utterly forgettable two hours of my life"]
    a = embed(model, tokenizer, texts)
    b = embed(model, tokenizer, texts[::-1], batch_size=1)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(a, b.flip(0), atol=1e-5, rtol=1e-5)


def test_zero_shot_chooses_descriptions_on_validation_only():
    labels = ["neg", "pos"]
    table = {"x": torch.tensor([1.0, 0.0]), "y": torch.tensor([0.0, 1.0])}

    def encode(texts):
        return torch.stack([table[t] for t in texts])

    val_x, val_y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), [0, 1]
    test_x, test_y = torch.tensor([[0.0, 1.0], [1.0, 0.0]]), [0, 1]  # the opposite of validation
    result = zero_shot(encode, labels, [{"neg": "y", "pos": "x"}, {"neg": "x", "pos": "y"}], val_x, val_y,
                       test_x, test_y)
    assert result["descriptions"] == {"neg": "x", "pos": "y"} and result["validation_accuracy"] == 1.0
    assert result["metrics"]["accuracy"] == 0.0  # what the test split says is reported, not chosen on
    protos = prototypes(encode, labels, [Example("x", "neg"), Example("y", "pos")], val_x, val_y, shots=1)
    assert protos["accuracies"] == [1.0, 1.0, 1.0] and protos["accuracy_std"] == 0.0


def test_descriptions_must_cover_every_label(tmp_path):
    config = build_config({"output_dir": str(tmp_path), "data": {"max_train_samples": 50},
                           "baselines": {"descriptions": [{"negative": "bad"}]}})
    with pytest.raises(ConfigError, match=r"baselines.descriptions\[0\]: no description for positive"):
        experiment(config)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_every_classification_report_shows_the_zero_shot_baseline(lora_run):
    run_dir, summary = lora_run
    (zs,) = [b for b in summary["baselines"] if b["name"].startswith("zero-shot")]
    assert zs["candidates"] == 3 and zs["metrics"]["samples"] == summary["metrics"]["samples"]
    assert 0.5 < zs["metrics"]["accuracy"] < summary["metrics"]["accuracy"]
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "Baselines (same test split)" in report and "zero-shot (embedding similarity)" in report


@pytest.mark.slow
def test_zero_shot_on_mr_reaches_70_percent_with_the_recipe_descriptions(encoder):
    from tunecraft.config import load_config
    from tunecraft.evaluate.baselines import classification_baselines
    from tunecraft.tasks import build_task

    classification = build_task("classification")

    config = load_config("recipes/mr-lora.yaml", ["baselines.shots=[]", "baselines.tfidf=false"])
    data = classification.load_data(config.data)
    (result,) = classification_baselines(config, data, resolve_base("minilm-l6"))
    assert result["metrics"]["samples"] == 1004 and result["metrics"]["accuracy"] >= 0.70


@pytest.mark.slow
def test_few_shot_fine_tunes_learn_from_k_examples_and_leave_only_numbers(runs):
    from .conftest import recipe

    config = recipe(runs, "kshot", method={"name": "lora", "r": 8, "alpha": 16},
                    train={"lr": 1e-3, "max_steps": 5, "eval_each_epoch": False},
                    baselines={"zero_shot": False, "finetune_shots": [32], "finetune_epochs": 5})
    summary = experiment(config)
    (shot,) = [b for b in summary["baselines"] if b["name"].startswith("few-shot fine-tune")]
    assert shot["name"] == "few-shot fine-tune (lora, k=32 per class)" and len(shot["accuracies"]) == 3
    assert len(set(shot["accuracies"])) > 1  # three different draws of 64 examples
    # 64 labelled reviews and 40 steps: well above chance (0.5) on 400 held-out ones
    assert shot["accuracy_mean"] > 0.6, shot
    assert shot["metrics"]["samples"] == summary["metrics"]["samples"]
    assert not (config.run_dir / "few-shot").exists()  # the sub-runs' folders are gone; their numbers stay
    assert "few-shot fine-tune (lora, k=32 per class)" in (config.run_dir / "report.md").read_text()


def test_cloze_baseline_refuses_a_model_without_mlm_head_and_multi_token_verbalizers(runs):
    from .conftest import recipe

    cloze = {"verbalizers": {"negative": ["terrible"], "positive": ["great"]}}
    config = recipe(runs, "cloze-refused", method={"name": "lora"}, train={"max_steps": 2},
                    baselines={"cloze": cloze})
    # all-MiniLM-L6-v2 ships no masked-LM head: a fresh one would score noise, so the run stops before training
    with pytest.raises(ConfigError, match="baselines.cloze: the base model at .* has no masked-LM head"):
        experiment(config)
    assert not config.run_dir.exists()
    bad = recipe(runs, "cloze-bad", method={"name": "lora"}, train={"max_steps": 2},
                 baselines={"cloze": {"verbalizers": {"negative": ["terrible"], "positive": ["superduperfantastic"]}}})
    with pytest.raises(ConfigError, match=r"verbalizers.positive: 'superduperfantastic' is not one token"):
        experiment(bad)
    missing = recipe(runs, "cloze-missing", method={"name": "lora"}, train={"max_steps": 2},
                     baselines={"cloze": {"verbalizers": {"negative": ["terrible"]}}})
    with pytest.raises(ConfigError, match="verbalizers: no words for positive"):
        experiment(missing)
