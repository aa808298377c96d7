"""runs/ RunFolder (issue #32 item 4): a run folder's paths, its config read through the schema (old
config.yaml files keep loading), summary, metrics and meta; the RunRecipe run header of the three recipes."""

import json
import shutil

import pytest
import yaml

from tunecraft.config import RunConfig, build_config, dump_config
from tunecraft.continual.recipe import ContinualConfig
from tunecraft.errors import ConfigError, TunecraftError
from tunecraft.pretrain.config import PretrainRecipe
from tunecraft.runs import RunFolder, RunRecipe

from .conftest import tiny_classifier


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_classifier(tmp_path_factory.mktemp("runs"), "rf")


def test_the_paths_of_a_real_run(run):
    folder = RunFolder(run)
    assert folder.is_run() and folder.is_finished() and folder.has_config()
    for path in (folder.config_file, folder.summary_file, folder.metrics_file, folder.report_file,
                 folder.report_html, folder.predictions_file):
        assert path.is_file() and path.parent == run, path
    assert folder.model_dir.is_dir() and folder.model_dir == run / "model"
    assert folder.adapter_dir == run / "adapter" and folder.checkpoints == run / "checkpoints"
    assert folder.name == "rf" and not RunFolder(run / "nothing-here").is_run()


def test_config_summary_metrics_and_meta_are_the_runs_own(run):
    folder = RunFolder(run)
    config = folder.config(build_config)
    assert isinstance(config, RunConfig)
    assert dump_config(config) == folder.config_file.read_text(encoding="utf-8")
    assert config.run_dir == run and config.folder == folder
    assert folder.summary() == json.loads(folder.summary_file.read_text(encoding="utf-8"))
    lines = folder.metrics_file.read_text(encoding="utf-8").splitlines()
    assert folder.metrics() == [json.loads(line) for line in lines] and len(lines) >= 2
    assert folder.metrics(after=1) == [json.loads(line) for line in lines[1:]]
    assert folder.meta() == json.loads((run / "model" / "tunecraft.json").read_text(encoding="utf-8"))
    assert folder.meta()["task"] == "classification"


def _copy_with_config(run, tmp_path, edit) -> RunFolder:
    old = tmp_path / "old"
    shutil.copytree(run, old, ignore=shutil.ignore_patterns("model", "checkpoints"))
    raw = yaml.safe_load((old / "config.yaml").read_text(encoding="utf-8"))
    edit(raw)
    (old / "config.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return RunFolder(old)


def test_an_old_config_without_a_key_loads_with_its_default(run, tmp_path):
    folder = _copy_with_config(run, tmp_path, lambda raw: (raw["train"].pop("lr"), raw["data"].pop("augment")))
    config = folder.config(build_config)
    assert config.train.lr == RunConfig().train.lr
    assert config.data.augment == RunConfig().data.augment
    assert config.data.max_train_samples == 64  # the rest as the run wrote it


def test_a_broken_config_names_the_file_and_the_key(run, tmp_path):
    folder = _copy_with_config(run, tmp_path, lambda raw: raw["train"].update(lr="fast"))
    with pytest.raises(ConfigError) as err:
        folder.config(build_config)
    assert str(folder.config_file) in str(err.value) and "train.lr" in str(err.value)
    folder.config_file.write_text("train: [unclosed\n", encoding="utf-8")
    with pytest.raises(TunecraftError, match="not valid YAML") as err:
        folder.config(build_config)
    assert str(err.value).startswith(f"{folder.config_file}: ")


def test_a_folder_without_config_or_summary_says_which_file_is_missing(tmp_path):
    folder = RunFolder(tmp_path)
    with pytest.raises(TunecraftError) as err:
        folder.config(build_config)
    assert str(err.value) == f"{tmp_path / 'config.yaml'}: the run's configuration is missing"
    with pytest.raises(TunecraftError) as err:
        folder.summary()
    assert str(err.value) == f"{tmp_path}: not a finished run (no summary.json)"
    assert folder.metrics() == [] and folder.raw_config() == {} and folder.config_text() == ""


def test_the_three_recipes_share_the_run_header():
    for cls, name in ((RunConfig, "run"), (PretrainRecipe, "pretrain"), (ContinualConfig, "continual")):
        assert issubclass(cls, RunRecipe)
        assert list(cls.model_fields)[:3] == ["name", "output_dir", "seed"], cls
        assert cls.model_fields["name"].default == name and cls.model_fields["seed"].default == 42
    config = build_config({"name": "a", "output_dir": "out"})
    assert str(config.run_dir) == "out/a" and config.folder == RunFolder("out/a")
    assert str(PretrainRecipe(name="p", output_dir="o").run_dir) == "o/p"


def test_eval_resplits_an_old_run_unstratified_and_a_new_one_as_written(tmp_path):
    """A config.yaml written before splits were stratified has no data.split.stratify: eval re-splits that
    run's training file by one permutation, as it was trained; a newer one as it says."""
    from tunecraft.config import DataConfig
    from tunecraft.data import load_classification_data
    from tunecraft.evaluate.runs import run_file_split
    from tunecraft.tasks import build_task

    rows = "text,label\n" + "".join(f"text number {i},{'pos' if i % 5 else 'neg'}\n" for i in range(60))
    (tmp_path / "a.csv").write_text(rows, encoding="utf-8")
    split = {"seed": 3, "validation": 0.2, "test": 0.2}
    task, data = build_task("classification"), str(tmp_path / "a.csv")

    def tested(stratify: bool) -> list[str]:
        parts = load_classification_data(DataConfig(train=data, split={**split, "stratify": stratify}))
        return [e.text for e in parts.test]

    assert tested(True) != tested(False)
    for written, stratified in ((split, False), ({**split, "stratify": True}, True)):
        (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": {"train": data, "split": written}}))
        examples, note = run_file_split(tmp_path, task, data, "test")
        assert [e.text for e in examples] == tested(stratified), written
        assert "split by seed 3" in note


def test_experiment_writes_summary_and_report_once_with_its_baselines(tmp_path, monkeypatch):
    """experiment() adds its comparisons before the session's close, which writes summary.json and the report
    once, with them (it no longer rewrites both after train())."""
    import tunecraft.experiment
    import tunecraft.report
    import tunecraft.train.session
    from tunecraft.experiment import experiment

    writes = []
    for module, name in ((tunecraft.train.session, "write_json"), (tunecraft.experiment, "write_json"),
                         (tunecraft.report, "write_text")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda path, *a, _real=real, **k: (writes.append(path.name),
                                                                               _real(path, *a, **k))[1])
    config = build_config({
        "name": "once", "output_dir": str(tmp_path), "seed": 7,
        "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": 64},
        "data": {"dataset": "mr", "max_train_samples": 64, "max_eval_samples": 16},
        "train": {"max_steps": 2, "batch_size": 8, "precision": "fp32", "progress": False, "tensorboard": False,
                  "num_threads": 1},
        "baselines": {"zero_shot": False}})
    summary = experiment(config)
    assert writes.count("summary.json") == 1 and writes.count("report.md") == 1, writes
    saved = config.folder.summary()
    assert [b["name"] for b in saved["baselines"]] == [b["name"] for b in summary["baselines"]] != []
    assert saved == {k: v for k, v in summary.items() if k != "report"}
    assert summary["baselines"][0]["name"] in config.folder.report_file.read_text(encoding="utf-8")
