"""The Processor slot (models/__init__.py): a model folder's processor is loaded by what the folder holds, a
tokenizer-only folder exactly as before (AutoTokenizer); text code reads the tokenizer through one accessor; the
encoded data, batches and the loop's unit count need no tokens; LoRA/IA3 name method.target_modules where they
have no default for an architecture."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedModel, Wav2Vec2FeatureExtractor

from tunecraft.assets import model_path
from tunecraft.config import build_config
from tunecraft.data.dataset import Encoded, collate
from tunecraft.errors import ConfigError, TunecraftError
from tunecraft.methods import get_method
from tunecraft.models import Base, load_processor, pad_id_of, prepare_base, tokenizer_of
from tunecraft.tasks import build_task

TEXTS = ["a gorgeous, witty film", "Überraschend flach, leider.", "x"]


def test_a_tokenizer_folder_gives_the_same_tokenizer_and_encodings_as_autotokenizer():
    folder = model_path("minilm-l6")
    before, now = AutoTokenizer.from_pretrained(str(folder)), load_processor(folder)
    assert type(now) is type(before)
    assert now(TEXTS, TEXTS[::-1])["input_ids"] == before(TEXTS, TEXTS[::-1])["input_ids"]
    assert tokenizer_of(now) is now and pad_id_of(now) == before.pad_token_id == 0
    base = prepare_base(build_config({"model": {"base": "minilm-l6"}}).model, lambda: [])
    assert type(base.processor) is type(before) and base.tokenizer is base.processor and base.pad_id == 0


def test_a_text_run_folder_loads_its_tokenizer_as_before(tmp_path):
    from tests.conftest import tiny_classifier
    from tunecraft.trained import load_trained

    run = tiny_classifier(tmp_path, "chars")
    trained = load_trained(run)
    before = AutoTokenizer.from_pretrained(str(run / "model"))
    assert type(trained.processor) is type(before) and trained.tokenizer is trained.processor
    assert trained.processor(TEXTS)["input_ids"] == before(TEXTS)["input_ids"]
    assert trained.pad_id == before.pad_token_id
    saved = json.loads((run / "model" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert saved["model_max_length"] == 64  # the run's max_length, as the session always wrote it


def test_folders_without_a_tokenizer_give_their_feature_extractor_or_none(tmp_path):
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=8).save_pretrained(tmp_path / "audio")
    extractor = load_processor(tmp_path / "audio")
    assert isinstance(extractor, Wav2Vec2FeatureExtractor) and extractor.sampling_rate == 8
    assert tokenizer_of(extractor) is None and pad_id_of(extractor) is None
    (tmp_path / "bare").mkdir()
    assert load_processor(tmp_path / "bare") is None
    assert Base(None).tokenizer is None and Base(None).pad_id is None


def test_the_text_part_of_a_multimodal_processor_is_its_tokenizer():
    tokenizer = AutoTokenizer.from_pretrained(str(model_path("minilm-l6")))
    multimodal = SimpleNamespace(tokenizer=tokenizer, image_processor=object())
    assert Base(multimodal).tokenizer is tokenizer and Base(multimodal).pad_id == tokenizer.pad_token_id


def test_features_without_tokens_batch_by_stacking_and_count_one_each():
    enc = Encoded.of({"pixel_values": [torch.full((3, 2, 2), float(i)) for i in range(5)]}, [0, 1, 2, 0, 1])
    assert (len(enc), enc.lengths, enc.input_ids) == (5, [1] * 5, None)
    batch = collate(enc, [4, 1], pad_id=None)
    assert sorted(batch) == ["labels", "pixel_values"] and batch["pixel_values"].shape == (2, 3, 2, 2)
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == [4.0, 1.0] and batch["labels"].tolist() == [1, 1]
    assert Encoded.of({"input_features": [[0.0]] * 3}, sizes=[7, 2, 5]).lengths == [7, 2, 5]


def test_the_loop_counts_tokens_by_the_attention_mask_and_refuses_a_batch_without_one():
    task = build_task("classification")
    assert task.UNIT == "tokens"
    text = collate(Encoded([[5, 6, 7], [5]], None, [0, 1], 0), [0, 1], pad_id=0, pad_to_multiple_of=4)
    assert task.units(text) == (4, 8)
    with pytest.raises(TunecraftError, match=r"classification: .*no attention_mask.*Objective.units and UNIT"):
        task.units({"pixel_values": torch.zeros(2, 3)})


class _EmbedConfig(PretrainedConfig):
    model_type = "tiny-embed"


class _EmbedModel(PreTrainedModel):
    """An architecture neither tunecraft nor peft knows, with no linear layer besides its output."""

    config_class = _EmbedConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed, self.classifier = nn.Embedding(10, 4), nn.Linear(4, 2)
        self.post_init()


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_an_unknown_architecture_without_defaults_names_method_target_modules(method):
    cfg = build_config({"method": {"name": method}}).method
    name = {"lora": "LoRA", "ia3": "IA3"}[method]
    with pytest.raises(ConfigError, match=rf"^method\.target_modules: no default {name} targets for model type "
                                          "'tiny-embed'"):
        get_method(method).apply(_EmbedModel(_EmbedConfig()), cfg, build_task("classification"))
