import pytest
import yaml

from tunecraft.config import RunConfig, build_config, dump_config, load_config
from tunecraft.errors import ConfigError


def test_the_shipped_recipes_validate():
    for recipe in ("recipes/mr-lora.yaml", "recipes/mr-full.yaml", "recipes/mr-freeze.yaml"):
        config = load_config(recipe)
        assert isinstance(config, RunConfig)
    assert load_config("recipes/mr-lora.yaml").method.name == "lora"


def test_unknown_top_level_key_names_the_key_and_the_closest_valid_one():
    with pytest.raises(ConfigError) as err:
        build_config({"trian": {"lr": 1e-3}})
    assert "unknown key 'trian'" in str(err.value)
    assert "did you mean 'train'" in str(err.value)


def test_unknown_nested_key_is_named_with_its_section():
    with pytest.raises(ConfigError) as err:
        build_config({"train": {"learning_rate": 1e-3}})
    assert "unknown key 'train.learning_rate'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        build_config({"method": {"name": "lora", "rr": 4}})
    assert "unknown key 'method.rr'" in str(err.value)
    assert "did you mean 'r'" in str(err.value)


def test_a_key_of_another_method_is_refused():
    with pytest.raises(ConfigError) as err:
        build_config({"method": {"name": "full", "r": 8}})
    assert "unknown key 'method.r'" in str(err.value)


def test_unknown_method_and_bad_values_are_explained():
    with pytest.raises(ConfigError) as err:
        build_config({"method": {"name": "lorax"}})
    assert "method" in str(err.value) and "lora" in str(err.value)
    with pytest.raises(ConfigError) as err:
        build_config({"train": {"batch_size": 0}})
    assert "train.batch_size" in str(err.value)
    with pytest.raises(ConfigError) as err:
        build_config({"train": {"lr": "fast"}})
    assert "train.lr" in str(err.value) and "fast" in str(err.value)


def test_dotted_overrides_are_typed_and_validated():
    config = load_config("recipes/mr-lora.yaml", ["train.lr=3e-4", "method.r=16", "data.max_train_samples=100"])
    assert config.train.lr == pytest.approx(3e-4)
    assert config.method.r == 16
    assert config.data.max_train_samples == 100
    with pytest.raises(ConfigError) as err:
        load_config("recipes/mr-lora.yaml", ["method.rank=16"])
    assert "unknown key 'method.rank'" in str(err.value) and "'r'" in str(err.value)
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config("recipes/mr-lora.yaml", ["train.lr"])


def test_switching_method_by_override_replaces_the_method_and_names_what_it_dropped(caplog):
    with caplog.at_level("WARNING", logger="tunecraft"):
        config = load_config("recipes/mr-lora.yaml", ["method.name=full"])
    assert config.method.name == "full"
    note = caplog.text
    assert "method.name=full replaces the recipe's method lora" in note and "method.r," in note
    # a key given with the switch is kept and checked: ia3 has target_modules, not r
    ia3 = load_config("recipes/mr-lora.yaml", ["method.name=ia3", "method.target_modules=[query, value]"])
    assert ia3.method.name == "ia3" and list(ia3.method.target_modules) == ["query", "value"]
    with pytest.raises(ConfigError, match="unknown key 'method.r'"):
        load_config("recipes/mr-lora.yaml", ["method.name=ia3", "method.r=8"])
    with pytest.raises(ConfigError, match="unknown key 'method.rank'"):  # the same method: nothing is dropped
        load_config("recipes/mr-lora.yaml", ["method.rank=16"])


def test_resolved_config_round_trips():
    config = load_config("recipes/mr-lora.yaml", ["train.epochs=1"])
    again = build_config(yaml.safe_load(dump_config(config)))
    assert again == config


def test_missing_and_invalid_recipe_files(write):
    with pytest.raises(ConfigError, match="recipe not found"):
        load_config("no/such/recipe.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write("bad.yaml", "train: [unclosed"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write("list.yaml", "- a\n- b\n"))
