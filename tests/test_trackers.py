"""train.trackers: MLflow through accelerate's tracker API, read back with MLflow's own client; a tracker whose
package is missing is refused before any work, naming the package."""

import importlib.util

import pytest

from tunecraft.config import build_config
from tunecraft.errors import ConfigError
from tunecraft.experiment import experiment

from .test_studio import tiny


def test_mlflow_gets_the_params_and_every_logged_metric(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw = tiny("tracked", tmp_path, max_steps=12, eval_every=6, log_every=3, trackers=["mlflow"], lr=2e-3)
    raw["data"].update(max_train_samples=200, max_eval_samples=64)
    config = build_config(raw)
    summary = experiment(config)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("tunecraft").experiment_id])[0]
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.002" and run.data.params["model.base"] == "scratch:encoder-tiny"
    losses = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")]
    logged = [(r["step"], r["loss"]) for r in summary_history(config.run_dir) if r["type"] == "train"]
    assert [s for s, _ in losses] == [s for s, _ in logged] == [3, 6, 9, 12]
    assert [v for _, v in losses] == pytest.approx([v for _, v in logged])
    accuracy = [m.value for m in client.get_metric_history(run.info.run_id, "eval/accuracy")]
    assert accuracy == pytest.approx([r["accuracy"] for r in summary_history(config.run_dir) if r["type"] == "eval"])
    assert not (config.run_dir / "tensorboard").exists()  # not listed: not written
    assert summary["steps"] == 12


def summary_history(run_dir):
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_wandb_without_its_package_is_refused_before_the_run_folder_is_written(tmp_path):
    config = build_config(tiny("wb", tmp_path, trackers=["tensorboard", "wandb"]))
    with pytest.raises(ConfigError, match=r"train.trackers: 'wandb' needs the wandb package, which is not installed"):
        experiment(config)
    assert not config.run_dir.exists()


def test_tensorboard_false_is_the_short_form_of_leaving_it_out(tmp_path):
    assert build_config(tiny("x", tmp_path, tensorboard=False)).train.trackers == []
    assert build_config(tiny("x", tmp_path, trackers=["mlflow"])).train.trackers == ["mlflow"]
    with pytest.raises(ConfigError, match=r"train.trackers: Input should be 'tensorboard', 'mlflow' or 'wandb'"):
        build_config(tiny("x", tmp_path, trackers=["comet"]))
