"""`task:` as a tagged union validated through the task registry (issue #32 item 1): each task's own settings,
old-form recipes and run folders, per-run task instances, the one TaskData type and the one example loader."""

import inspect
import logging
from typing import Literal

import pytest
import torch

from tunecraft.align import losses
from tunecraft.config import apply_overrides, build_config, dump_config
from tunecraft.data.dataset import BUNDLED_CLASSIFICATION, BundledSets, TaskData, bundled_or_file
from tunecraft.errors import ConfigError, TunecraftError
from tunecraft.settings import TaskSettings
from tunecraft.studio.form import sections
from tunecraft.tasks import TASKS, Task, build_task, register_task
from tunecraft.tasks.classification import Classification

OLD_DPO = {  # recipes/chitchat-dpo.yaml as it was before `task:` held the task's settings
    "name": "chitchat-dpo", "task": "preference",
    "data": {"dataset": None, "train": "t.jsonl", "preference": {"overlong": "drop"}},
    "method": {"name": "lora", "r": 16, "alpha": 32},
    "preference": {"objective": "dpo", "beta": 0.1},
    "generation": {"max_new_tokens": 32, "temperature": 0.0, "stop": ["\n\n"], "eval_samples": 16,
                   "report_samples": 6, "batch_size": 8},
}
NEW_DPO = {
    "name": "chitchat-dpo",
    "task": {"name": "preference", "objective": "dpo", "beta": 0.1, "overlong": "drop",
             "generation": {"max_new_tokens": 32, "temperature": 0.0, "stop": ["\n\n"], "eval_samples": 16,
                            "report_samples": 6, "batch_size": 8}},
    "data": {"dataset": None, "train": "t.jsonl"},
    "method": {"name": "lora", "r": 16, "alpha": 32},
}


def refused(raw) -> str:
    with pytest.raises(ConfigError) as err:
        build_config(raw)
    return str(err.value)


# -- the tagged union -------------------------------------------------------------------------------------------

def test_a_bare_task_name_is_its_defaults_and_the_mapping_form_is_the_same():
    bare, mapped = build_config({"task": "causal_lm"}), build_config({"task": {"name": "causal_lm"}})
    assert bare.task == mapped.task and bare.task.name == "causal_lm" and bare.task.generation.max_new_tokens == 48
    assert build_config({}).task.name == "classification"
    again = build_config(__import__("yaml").safe_load(dump_config(bare)))
    assert dump_config(again) == dump_config(bare)


def test_unknown_task_unknown_key_and_bad_value_name_the_key_and_the_choices():
    assert "  task: unknown task 'translation'; choose one of classification, token_classification, causal_lm, " \
           "reward_model, preference, rl" in refused({"task": "translation"})
    message = refused({"task": {"name": "preference", "betta": 0.2}})
    assert "unknown key 'task.betta' (did you mean 'beta'?); valid keys here: name, objective, beta," in message
    assert "  task.group_size: Input should be greater than or equal to 2 (got 1)" in \
        refused({"task": {"name": "rl", "group_size": 1}})
    assert "task.generation.top_p:" in refused({"task": {"name": "causal_lm", "generation": {"top_p": 0}}})


def test_early_stopping_defaults_come_from_the_task():
    assert build_config({"task": "token_classification"}).train.early_stopping.metric == "f1"
    assert build_config({"task": {"name": "rl"}}).train.early_stopping.mode == "max"
    assert "unknown metric 'f1' for causal_lm" in refused({"task": "causal_lm",
                                                            "train": {"early_stopping": {"metric": "f1"}}})


def test_switching_task_by_override_drops_the_keys_the_new_task_lacks(caplog):
    raw = {"task": {"name": "causal_lm", "packing": True, "overlong": "truncate", "generation": {"stop": ["#"]}}}
    with caplog.at_level(logging.WARNING, logger="tunecraft"):
        config = build_config(apply_overrides(raw, ["task.name=preference"]))
    assert config.task.name == "preference" and config.task.overlong == "truncate"
    assert config.task.generation.stop == ["#"]
    assert "task.name=preference replaces the recipe's task causal_lm: dropped task.packing" in caplog.text
    # a bare task name takes dotted overrides of its settings
    assert build_config(apply_overrides({"task": "rl"}, ["task.beta=0.5"])).task.beta == 0.5


# -- old-form recipes and run folders ---------------------------------------------------------------------------

def test_an_old_form_recipe_resolves_to_the_same_config_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="tunecraft"):
        old = build_config(OLD_DPO)
    assert dump_config(old) == dump_config(build_config(NEW_DPO))
    warnings = [r.getMessage() for r in caplog.records if "old-form" in r.getMessage()]
    assert len(warnings) == 1
    for moved in ("preference.beta → task.beta", "data.preference.overlong → task.overlong",
                  "generation.batch_size → task.generation.batch_size"):
        assert moved in warnings[0]


def test_an_old_section_the_task_never_read_is_dropped_and_said(caplog):
    with caplog.at_level(logging.WARNING, logger="tunecraft"):
        config = build_config({"task": "classification", "generation": {"max_new_tokens": 5},
                               "data": {"ner": {"scheme": "bioes"}}})
    assert config.task.name == "classification" and "ner" not in config.data.model_dump()
    assert "dropped data.ner, generation (not read by task classification)" in caplog.text


def test_a_legacy_key_set_both_ways_keeps_the_task_value():
    config = build_config({"task": {"name": "rl", "beta": 0.3}, "rl": {"beta": 0.1, "group_size": 8}})
    assert (config.task.beta, config.task.group_size) == (0.3, 8)


def test_an_old_form_override_wins_over_the_recipes_task_value(caplog):
    """`generation.max_new_tokens=8` on the command line of a new-form recipe sets task.generation.max_new_tokens
    (it would otherwise lose to the recipe's own task: value), with a warning naming the new key."""
    with caplog.at_level(logging.WARNING, logger="tunecraft"):
        raw = apply_overrides({"task": {"name": "rl", "group_size": 4, "generation": {"max_new_tokens": 32}}},
                              ["generation.max_new_tokens=8", "rl.group_size=2", "train.lr=1e-4"])
    config = build_config(raw)
    assert (config.task.generation.max_new_tokens, config.task.group_size, config.train.lr) == (8, 2, 1e-4)
    assert "override rl.group_size=2: the key moved to task.group_size" in caplog.text
    ner = build_config(apply_overrides({"task": "token_classification"}, ["data.ner.scheme=bioes"]))
    assert ner.task.scheme == "bioes"
    changed = build_config(apply_overrides({"task": "classification"}, ["task.name=preference", "preference.beta=0.3"]))
    assert changed.task.beta == 0.3


def test_an_old_run_meta_rebuilds_the_task_settings():
    old = {"task": "preference", "preference": {"objective": "ipo", "beta": 0.3, "label_smoothing": 0.0,
                                                "kind": "pairs", "overlong": "error", "good_rating": 4},
           "generation": {"max_new_tokens": 7}}
    task = build_task(old)
    assert (task.settings.objective, task.settings.beta, task.settings.good_rating) == ("ipo", 0.3, 4)
    assert task.settings.generation.max_new_tokens == 7
    ner = build_task({"task": "token_classification", "ner": {"scheme": "bioes", "stride": 8}})
    assert (ner.settings.scheme, ner.settings.stride) == ("bioes", 8)
    new = {"task": "rl", "task_settings": {"name": "rl", "group_size": 6}, "rl": {"group_size": 2}}
    assert build_task(new).settings.group_size == 6  # the stored settings win


# -- per-run instances ------------------------------------------------------------------------------------------

def test_every_build_is_a_new_instance_holding_its_own_settings():
    a = build_task(build_config({"task": {"name": "preference", "objective": "simpo", "beta": 2.0}}).task)
    b = build_task(build_config({"task": {"name": "preference", "beta": 0.5}}).task)
    assert a is not b and (a.settings.objective, a.settings.beta) == ("simpo", 2.0)
    assert (b.settings.objective, b.settings.beta) == ("dpo", 0.5)
    logps, tokens = torch.tensor([-1.0, -3.0]), torch.tensor([2.0, 2.0])
    simpo = losses.simpo(logps[:1], logps[1:], tokens[:1], tokens[1:], 2.0, 0.5)
    assert torch.equal(a.losses(logps, tokens, None, None), simpo)  # a's own objective and beta
    with pytest.raises(TunecraftError, match="dpo needs the reference log-probs"):
        b.losses(logps, tokens, None, None)  # b's objective is still DPO
    first, second = build_task("classification"), build_task("classification")
    first.weight = torch.tensor([1.0, 3.0])
    assert second.weight is None


def test_no_task_module_keeps_a_module_level_instance():
    import importlib

    for name in TASKS:
        module = importlib.import_module(f"tunecraft.tasks.{name}")
        assert not [k for k, v in vars(module).items() if isinstance(v, Task)], name


def test_the_optional_members_have_defaults_and_evaluate_takes_scores_everywhere():
    assert not {"load_eval_examples", "training_texts", "prediction_rows"} & Task.__abstractmethods__
    for cls in TASKS.values():
        assert list(inspect.signature(cls.evaluate).parameters)[:3] == ["self", "scores", "enc"], cls.NAME


# -- a task registered at run time ------------------------------------------------------------------------------

class EchoSettings(TaskSettings):
    name: Literal["echo"] = "echo"
    loud: bool = False


class Echo(Classification):
    NAME = "echo"
    Settings = EchoSettings


@pytest.fixture
def echo():
    register_task(Echo)
    yield Echo
    del TASKS["echo"]


def test_a_registered_task_is_a_valid_recipe_and_shows_on_the_launch_form(echo):
    config = build_config({"task": {"name": "echo", "loud": True}})
    assert isinstance(build_task(config.task), Echo) and build_task(config.task).settings.loud
    assert "unknown key 'task.quiet'; valid keys here: name, loud" in refused({"task": {"name": "echo", "quiet": 1}})
    (task_fields,) = [fields for section, fields in sections(config) if section == "task"]
    assert task_fields[0]["key"] == "task.name" and task_fields[0]["choices"][-1] == "echo"
    assert [f["key"] for f in task_fields] == ["task.name", "task.loud"]


def test_a_task_without_settings_of_its_own_gets_its_name_alone():
    class Quiet(Classification):
        NAME = "quiet"

    register_task(Quiet)
    try:
        assert build_config({"task": "quiet"}).task.model_dump() == {"name": "quiet"}
        assert "unknown key 'task.loud'" in refused({"task": {"name": "quiet", "loud": True}})
    finally:
        del TASKS["quiet"]


def test_the_launch_form_offers_every_task_like_every_method():
    (task_fields,) = [fields for section, fields in sections(build_config({"task": "rl"})) if section == "task"]
    assert task_fields[0]["choices"] == list(TASKS)
    assert "task.generation.max_new_tokens" in [f["key"] for f in task_fields]


# -- one TaskData, one loader -----------------------------------------------------------------------------------

def test_every_task_loads_one_data_type(tmp_path):
    rows = tmp_path / "pairs.jsonl"
    rows.write_text("".join(f'{{"chosen": "good {i}", "rejected": "bad {i}"}}\n' for i in range(10)),
                    encoding="utf-8")
    config = build_config({"task": "reward_model", "data": {"dataset": None, "train": str(rows)}})
    data = build_task(config.task).load_data(config.data)
    assert isinstance(data, TaskData) and (data.columns.text, data.label_map.labels) == ("chosen", [])
    assert isinstance(build_task("classification").load_data(build_config({}).data), TaskData)


def test_the_one_loader_reads_a_bundled_split_all_of_it_or_a_file(tmp_path):
    sets = BundledSets(["abc"], lambda name, seed, f: {"train": [1, 2], "validation": [3], "test": [4]}, "letter set")
    assert bundled_or_file("abc", "test", 0, (0.1, 0.1), sets, None) == [4]
    assert bundled_or_file("abc", "all", 0, (0.1, 0.1), sets, None) == [1, 2, 3, 4]
    path = tmp_path / "f.txt"
    path.write_text("x")
    assert bundled_or_file(str(path), "test", 0, (0.1, 0.1), sets, lambda p: [p]) == [str(path)]
    with pytest.raises(TunecraftError, match=r"'nope' is neither a bundled letter set \(abc\) nor a file"):
        bundled_or_file("nope", "test", 0, (0.1, 0.1), sets, None)
    whole = bundled_or_file("mr", "all", 42, (0.1, 0.1), BUNDLED_CLASSIFICATION, None)
    parts = [bundled_or_file("mr", s, 42, (0.1, 0.1), BUNDLED_CLASSIFICATION, None)
             for s in ("train", "validation", "test")]
    assert len(whole) == sum(map(len, parts)) and {e.text for e in whole} == {e.text for p in parts for e in p}
