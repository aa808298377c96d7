"""A trained run's task settings rebuilt from its tunecraft.json (Task.settings_from_meta): the stored
task_settings, or, for a run written before they were stored, the task's own legacy section."""

import pytest

from tunecraft.tasks.causal_lm import CausalLM
from tunecraft.tasks.preference import Preference
from tunecraft.tasks.reward_model import RewardModel
from tunecraft.tasks.rl import ReinforcementLearning
from tunecraft.tasks.token_classification import TokenClassification

GENERATION = {"max_new_tokens": 7}


def test_causal_lm_legacy_sft_keeps_only_its_keys_and_the_generation_section():
    meta = {"sft": {"format": "alpaca", "packing": True, "max_length": 64}, "generation": GENERATION}
    got = CausalLM.settings_from_meta(meta)
    assert (got.format, got.packing, got.generation.max_new_tokens) == ("alpaca", True, 7)


@pytest.mark.parametrize("cls, meta, field, value", [
    (Preference, {"preference": {"beta": 0.3}, "generation": GENERATION}, "beta", 0.3),
    (ReinforcementLearning, {"rl": {"group_size": 2}, "generation": GENERATION}, "group_size", 2),
])
def test_generative_legacy_sections_take_the_generation_section(cls, meta, field, value):
    got = cls.settings_from_meta(meta)
    assert (getattr(got, field), got.generation.max_new_tokens) == (value, 7)


@pytest.mark.parametrize("cls, meta, field, value", [
    (RewardModel, {"reward_model": {"margin_scale": 0.5}}, "margin_scale", 0.5),
    (TokenClassification, {"ner": {"stride": 8}}, "stride", 8),
])
def test_legacy_sections(cls, meta, field, value):
    assert getattr(cls.settings_from_meta(meta), field) == value


def test_stored_task_settings_win_over_a_legacy_section_and_no_section_gives_the_defaults():
    meta = {"task_settings": {"name": "token_classification", "stride": 4}, "ner": {"stride": 8}}
    assert TokenClassification.settings_from_meta(meta).stride == 4
    assert TokenClassification.settings_from_meta({}) == TokenClassification.Settings()
    assert RewardModel.settings_from_meta({"task_settings": None, "reward_model": {"margin_scale": 0.5}}) \
        == RewardModel.Settings()
