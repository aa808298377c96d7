import pytest

from tunecraft.assets import model_path
from tunecraft.config import build_config
from tunecraft.data import LabelMap
from tunecraft.methods import count_parameters, get_method
from tunecraft.tasks import classification


@pytest.fixture
def model():
    return classification.build_model(model_path("minilm-l6"), LabelMap(["negative", "positive"]))


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_full_trains_everything(model):
    cfg = build_config({"method": {"name": "full"}}).method
    model = get_method("full").apply(model, cfg)
    trainable, total = count_parameters(model)
    assert trainable == total


def test_freeze_freezes_embeddings_and_the_lowest_layers(model):
    cfg = build_config({"method": {"name": "freeze", "layers": 4}}).method
    names = trainable_names(get_method("freeze").apply(model, cfg))
    assert not any(n.startswith("bert.embeddings") for n in names)
    for layer in range(6):
        assert any(f"encoder.layer.{layer}." in n for n in names) == (layer >= 4), layer
    assert {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight"} <= names


def test_freeze_refuses_more_layers_than_the_model_has(model):
    cfg = build_config({"method": {"name": "freeze", "layers": 7}}).method
    with pytest.raises(ValueError, match="has 6 layers"):
        get_method("freeze").apply(model, cfg)


def test_lora_trains_adapters_and_the_head_only(model):
    cfg = build_config({"method": {"name": "lora", "r": 4}}).method
    peft_model = get_method("lora").apply(model, cfg)
    names = trainable_names(peft_model)
    assert names and all("lora_" in n or "classifier" in n for n in names)
    assert any("query.lora_A" in n for n in names) and any("output.dense.lora_B" in n for n in names)
    trainable, total = count_parameters(peft_model)
    assert trainable < 0.02 * total


def test_lora_with_explicit_targets(model):
    cfg = build_config({"method": {"name": "lora", "target_modules": ["query", "value"]}}).method
    names = trainable_names(get_method("lora").apply(model, cfg))
    assert not any("key.lora" in n or "dense.lora" in n for n in names)
