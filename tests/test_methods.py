import pytest

from tunecraft.assets import model_path
from tunecraft.config import build_config
from tunecraft.data import LabelMap
from tunecraft.errors import ConfigError
from tunecraft.methods import count_parameters, get_method
from tunecraft.tasks import build_task

classification = build_task("classification")


@pytest.fixture
def model():
    return classification.build_model(model_path("minilm-l6"), LabelMap(["negative", "positive"]))


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_full_trains_everything(model):
    cfg = build_config({"method": {"name": "full"}}).method
    model = get_method("full").apply(model, cfg, classification)
    trainable, total = count_parameters(model)
    assert trainable == total


def test_freeze_freezes_embeddings_and_the_lowest_layers(model):
    cfg = build_config({"method": {"name": "freeze", "layers": 4}}).method
    names = trainable_names(get_method("freeze").apply(model, cfg, classification))
    assert not any(n.startswith("bert.embeddings") for n in names)
    for layer in range(6):
        assert any(f"encoder.layer.{layer}." in n for n in names) == (layer >= 4), layer
    assert {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight"} <= names


def test_freeze_refuses_more_layers_than_the_model_has(model):
    cfg = build_config({"method": {"name": "freeze", "layers": 7}}).method
    with pytest.raises(ValueError, match="has 6 layers"):
        get_method("freeze").apply(model, cfg, classification)


def test_lora_trains_adapters_and_the_head_only(model):
    cfg = build_config({"method": {"name": "lora", "r": 4}}).method
    peft_model = get_method("lora").apply(model, cfg, classification)
    names = trainable_names(peft_model)
    assert names and all("lora_" in n or "classifier" in n for n in names)
    assert any("query.lora_A" in n for n in names) and any("output.dense.lora_B" in n for n in names)
    trainable, total = count_parameters(peft_model)
    assert trainable < 0.02 * total


def test_lora_with_explicit_targets(model):
    cfg = build_config({"method": {"name": "lora", "target_modules": ["query", "value"]}}).method
    names = trainable_names(get_method("lora").apply(model, cfg, classification))
    assert not any("key.lora" in n or "dense.lora" in n for n in names)


def test_ia3_trains_scaling_vectors_and_the_head_only(model):
    cfg = build_config({"method": {"name": "ia3"}}).method
    peft_model = get_method("ia3").apply(model, cfg, classification)
    names = trainable_names(peft_model)
    assert any("key.ia3_l" in n for n in names) and any("output.dense.ia3_l" in n for n in names)
    assert all("ia3_l" in n or "classifier" in n for n in names)
    trainable, total = count_parameters(peft_model)
    assert trainable < 0.001 * total


def test_dora_adds_a_magnitude_vector_per_adapted_layer(model):
    cfg = build_config({"method": {"name": "lora", "r": 4, "dora": True, "target_modules": ["query"]}}).method
    names = trainable_names(get_method("lora").apply(model, cfg, classification))
    assert sum("query.lora_magnitude_vector" in n for n in names) == 6


def test_adalora_settings_are_checked(model):
    cfg = build_config({"method": {"name": "adalora", "init_r": 4, "target_r": 8}}).method
    with pytest.raises(ValueError, match=r"target_r \(8\) must be smaller than method.init_r \(4\)"):
        get_method("adalora").apply(model, cfg, classification)
    with pytest.raises(ConfigError, match="unknown key 'method.rank'"):
        build_config({"method": {"name": "adalora", "rank": 4}})


# scalings, prefixes and prompts need larger steps
LEARNING_RATES = {"ia3": 1e-2, "prefix": 1e-2, "prompt": 3e-2, "ptuning": 1e-2}


@pytest.mark.slow
@pytest.mark.parametrize("method", [{"name": "ia3"}, {"name": "adalora", "init_r": 8, "target_r": 2},
                                    {"name": "lora", "r": 8, "dora": True}, {"name": "adapter"},
                                    {"name": "prefix"}, {"name": "prompt"}, {"name": "ptuning"}],
                         ids=["ia3", "adalora", "dora", "adapter", "prefix", "prompt", "ptuning"])
def test_peft_methods_learn_and_reload_as_trained(method, runs):
    import json

    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunecraft import predict
    from tunecraft.train import train

    from .conftest import recipe

    config = recipe(runs, f"m-{method['name']}-{len(method)}", method=method,
                    train={"lr": LEARNING_RATES.get(method["name"], 2e-3), "max_steps": 100,
                           "eval_each_epoch": False})
    summary = train(config)
    # chance is 0.5; 100 steps only, in which virtual-token methods learn slowest (prompt: 62% here)
    floor = 0.6 if method["name"] in ("prompt", "ptuning") else 0.65
    assert summary["metrics"]["accuracy"] >= floor, summary["metrics"]
    # Houlsby adapters of width 64 in two places per block, plus the layer norms and pooler: about 3%
    assert summary["trainable_params"] < (0.04 if method["name"] == "adapter" else 0.02) * summary["total_params"]
    run_dir = config.run_dir
    # what eval/predict/serve load gives the probabilities the training process wrote for the test split
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()[:16]]
    again = predict(run_dir, [r["text"] for r in rows], precision="fp32")
    for row, new in zip(rows, again):
        assert new["probabilities"] == pytest.approx(row["probabilities"], abs=2e-2)  # training evaluated in bf16
    if not get_method(method["name"]).merged:
        return
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    texts = ["a gorgeous, witty film", "a dull, lifeless mess", "it was fine, I guess"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    merged = AutoModelForSequenceClassification.from_pretrained(run_dir / "model").eval()
    base = AutoModelForSequenceClassification.from_pretrained(model_path("minilm-l6"), num_labels=2)
    unmerged = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    if method["name"] == "adalora":
        # the budget schedule pruned ranks: on average target_r of init_r remain per adapted matrix
        pattern = unmerged.peft_config["default"].rank_pattern
        kept = [sum(mask) for mask in pattern.values()]
        assert kept and sum(kept) / len(kept) == pytest.approx(method["target_r"], abs=0.5)
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, unmerged(**batch).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("settings", [{"name": "adapter"}, {"name": "adapter", "placement": "pfeiffer"},
                                      {"name": "prefix"}, {"name": "prefix", "projection_hidden": 32}],
                         ids=["houlsby", "pfeiffer", "prefix", "prefix-mlp"])
def test_inserted_methods_pad_safely_train_only_their_part_and_reload_exactly(settings, model, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path("minilm-l6"))
    texts = ["a fine film", "an utterly dull and pointless mess of a movie, start to end"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
    method = get_method(settings["name"])
    model = method.apply(model, build_config({"method": settings}).method, classification)
    names = trainable_names(model)
    assert "classifier.weight" in names and "bert.encoder.layer.0.attention.self.inner.query.weight" not in names
    assert not any(".inner." in n and "LayerNorm" not in n for n in names), sorted(names)[:5]
    model.eval()
    with torch.no_grad():
        start = model(**batch).logits
        alone = model(**tokenizer(texts[:1], return_tensors="pt")).logits
    # padding is masked for the inserted parts too: the short text scores the same alone and in a padded batch
    torch.testing.assert_close(alone, start[:1], atol=1e-5, rtol=1e-5)
    if settings["name"] == "adapter":  # the up-projections start at zero: the base model, unchanged
        torch.testing.assert_close(start, before)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        model(**batch, labels=torch.tensor([1, 0])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        trained = model(**batch).logits
    assert not torch.allclose(trained, start)
    plain = method.export(model, tmp_path / "model", tmp_path / "adapter")
    assert not any(".inner." in k for k in plain.state_dict())
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    reloaded = method.load_adapter(reloaded, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trained, atol=1e-5, rtol=1e-5)


def test_prefix_keeps_token_positions_for_ner():
    from transformers import AutoTokenizer

    from tunecraft.tasks import build_task

    token_classification = build_task("token_classification")

    model = token_classification.build_model(model_path("minilm-l6"), LabelMap(["O", "B-PER", "I-PER"]))
    model = get_method("prefix").apply(model, build_config({"method": {"name": "prefix"}}).method,
                                       token_classification)
    batch = AutoTokenizer.from_pretrained(model_path("minilm-l6"))(["Ada Lovelace met Babbage"], return_tensors="pt")
    assert model(**batch).logits.shape[:2] == batch["input_ids"].shape


def test_methods_on_a_causal_lm_adapter_starts_as_the_base_and_virtual_tokens_are_refused():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunecraft.models import resolve_base

    path = resolve_base("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    batch = tokenizer(["The capital of France is"], return_tensors="pt")
    with torch.no_grad():
        before = model(**batch).logits
    settings = build_config({"task": "causal_lm", "method": {"name": "adapter"}}).method
    model = get_method("adapter").apply(model, settings, build_task("causal_lm"))
    trainable, total = count_parameters(model)
    assert 0 < trainable < 0.05 * total  # bottlenecks after o_proj and down_proj, and the RMS norms
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, before)
    for name, message in (("prompt", "not 'causal_lm'"), ("prefix", "supports BERT-style encoders")):
        cfg = build_config({"task": "causal_lm", "method": {"name": name}}).method
        with pytest.raises(ValueError, match=message):
            get_method(name).apply(AutoModelForCausalLM.from_pretrained(str(path)), cfg, build_task("causal_lm"))


@pytest.mark.parametrize("method", [{"name": "lora", "r": 8}, {"name": "lora", "r": 8, "dora": True}, {"name": "ia3"},
                                    {"name": "adalora", "init_r": 8, "target_r": 2}, {"name": "adapter"},
                                    {"name": "prefix"}, {"name": "freeze", "layers": 4}],
                         ids=["lora", "dora", "ia3", "adalora", "adapter", "prefix", "freeze"])
def test_frozen_weights_cast_once_to_bf16_train_bit_for_bit_the_same(method, tmp_path, monkeypatch):
    """The loop holds frozen Linear weights in bf16 during bf16 training (autocast would re-cast them at
    every use): the trained weights and predictions must equal those of a run without that, exactly."""
    from contextlib import contextmanager, nullcontext

    import torch
    from safetensors.torch import load_file

    import tunecraft.train.loop as loop
    from tunecraft.runtime.precision import frozen_linears_cast
    from tunecraft.train import train

    from .conftest import recipe

    held = []

    @contextmanager
    def spy(model, dtype):
        with frozen_linears_cast(model, dtype):
            held.append(sum(m.weight.dtype == torch.bfloat16 for m in model.modules()
                            if isinstance(m, torch.nn.Linear)))
            yield
        assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 again for export

    def run(name):
        config = recipe(tmp_path, name, method=method, baselines={"zero_shot": False},
                        data={"max_train_samples": 96, "max_eval_samples": 32},
                        train={"lr": 2e-3, "max_steps": 3, "eval_each_epoch": False, "precision": "bf16"})
        train(config)
        folder = config.run_dir
        return (load_file(folder / "model" / "model.safetensors"),
                (folder / "predictions.jsonl").read_text())

    monkeypatch.setattr(loop, "frozen_linears_cast", spy)
    cast_weights, cast_predictions = run("cast")
    if method.get("dora"):  # DoRA layers read their base weight outside autocast: left in fp32
        assert held and held[0] <= 1, held
    else:  # the frozen query/key/value/output/FFN layers of 6 blocks, at least
        assert held and held[0] >= 12, held
    monkeypatch.setattr(loop, "frozen_linears_cast", lambda model, dtype: nullcontext())
    plain_weights, plain_predictions = run("plain")
    assert cast_weights.keys() == plain_weights.keys()
    for name, tensor in cast_weights.items():
        assert tensor.dtype == plain_weights[name].dtype and torch.equal(tensor, plain_weights[name]), name
    assert cast_predictions == plain_predictions


def _tiny(model_type: str):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    sizes = ({"n_embd": 16, "n_layer": 1, "n_head": 2} if model_type == "gpt2" else
             {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "num_key_value_heads": 2})
    return AutoModelForSequenceClassification.from_config(
        AutoConfig.for_model(model_type, vocab_size=64, num_labels=2, **sizes))


def test_default_targets_keep_bert_and_llama_and_follow_peft_elsewhere(model):
    lora = build_config({"method": {"name": "lora", "r": 2}}).method
    ia3 = build_config({"method": {"name": "ia3"}}).method

    def targets(name, cfg, m):
        return get_method(name).apply(m, cfg, classification).peft_config["default"].target_modules

    # the demo recipes' architectures: exactly today's targets
    assert targets("lora", lora, model) == {"query", "key", "value", "dense"}
    assert targets("lora", lora, _tiny("llama")) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                      "up_proj", "down_proj"}
    assert targets("ia3", ia3, _tiny("llama")) == {"k_proj", "v_proj", "down_proj"}
    # another family: LoRA on every linear layer (peft's all-linear), IA3 from peft's own mapping
    gpt2 = get_method("lora").apply(_tiny("gpt2"), lora, classification)
    assert {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n in trainable_names(gpt2) if ".lora_A" in n} \
        == {"c_attn", "c_proj", "c_fc"}
    assert targets("ia3", ia3, _tiny("gpt2")) == {"c_attn", "mlp.c_proj"}
