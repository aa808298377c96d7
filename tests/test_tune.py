"""`tunecraft tune`: a 3-trial Optuna search with LoRA on a tiny mr slice; the bad trial is pruned, the best
recipe loads and carries the best trial's values."""

import csv

import pytest

from tunecraft.cli import main
from tunecraft.config import TuneConfig, build_config, dump_config, load_config
from tunecraft.errors import ConfigError
from tunecraft.tune import tune

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

GOOD, BAD = 3e-3, 1e-7


def recipe(tmp_path, **tune_section) -> dict:
    return {"name": "search", "output_dir": str(tmp_path), "seed": 7,
            "data": {"dataset": "mr", "max_train_samples": 128, "max_eval_samples": 64},
            "method": {"name": "lora", "r": 8, "alpha": 16},
            "train": {"epochs": 2, "batch_size": 32, "lr": 1e-3, "warmup_ratio": 0.0, "progress": False,
                      "tensorboard": False, "num_threads": 1, "early_stopping": {"metric": "loss", "mode": "min"}},
            "baselines": {"zero_shot": False},
            "tune": {"trials": 3, "startup_trials": 1, "seed": 0,
                     "space": {"train.lr": {"type": "float", "low": BAD, "high": GOOD, "log": True},
                               "method.r": {"type": "categorical", "choices": [4, 8]}},
                     # a good trial, then one that cannot learn: after its first epoch it trails the median
                     "first": [{"train.lr": GOOD, "method.r": 8}, {"train.lr": BAD, "method.r": 4}],
                     **tune_section}}


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    path = tmp / "search.yaml"
    path.write_text(dump_config(build_config(recipe(tmp))))
    assert main(["tune", str(path), "--no-progress"]) == 0
    return tmp / "search"


def rows(out):
    with open(out / "results.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_the_trial_that_cannot_learn_is_pruned_after_its_first_evaluation(search):
    by_trial = {int(r["trial"]): r for r in rows(search)}
    assert len(by_trial) == 3
    assert by_trial[0]["state"] == "complete" and by_trial[0]["evaluations"] == "2"
    assert by_trial[1]["state"] == "pruned" and by_trial[1]["evaluations"] == "1"
    assert float(by_trial[1]["train.lr"]) == BAD
    # pruned before the second epoch: its run never evaluated twice
    assert sum('"type": "eval"' in line for line in
               (search / "trials" / "trial-001" / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (search / "trials" / "trial-000" / "model").exists()  # keep_models is off


def test_best_recipe_loads_and_matches_the_best_trial(search):
    import json

    summary = json.loads((search / "tune.json").read_text())
    done = [r for r in rows(search) if r["state"] == "complete"]
    best_row = min(done, key=lambda r: float(r["value"]))  # validation loss, minimised
    assert int(best_row["trial"]) == summary["best_trial"]
    assert float(best_row["value"]) == pytest.approx(summary["best_value"])
    best = load_config(search / "best.yaml")
    assert best.tune is None and best.name == "search-best"
    assert best.train.lr == pytest.approx(float(best_row["train.lr"]))
    assert best.method.r == int(best_row["method.r"])
    assert best.train.epochs == 2 and best.data.max_train_samples == 128  # everything else as the recipe
    # the trial's own run selected on the same metric and reached the same value
    trial = json.loads((search / "trials" / f"trial-{summary['best_trial']:03d}" / "summary.json").read_text())
    assert trial["best_validation"]["loss"] == pytest.approx(summary["best_value"])
    table = (search / "results.md").read_text()
    assert "| trial | state | validation loss |" in table and "pruned" in table


def test_a_search_space_key_that_is_not_in_the_recipe_is_named(tmp_path):
    raw = recipe(tmp_path, space={"train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3}}, first=[])
    with pytest.raises(ConfigError, match="learning_rate"):
        tune(build_config(raw))


def test_space_validation():
    with pytest.raises(ValueError, match="choices"):
        TuneConfig.model_validate({"space": {"method.r": {"type": "categorical"}}})
    with pytest.raises(ValueError, match="low > 0"):
        TuneConfig.model_validate({"space": {"train.lr": {"type": "float", "low": 0, "high": 1, "log": True}}})
