"""Class imbalance (#36 items 2 and 3): train.class_weights weighs the classification loss exactly as torch's
weighted cross-entropy; a mapping naming an unknown label fails before any write; macro averages cover the
classes present in the gold labels and name the absent ones."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from sklearn.metrics import f1_score, precision_score
from sklearn.utils.class_weight import compute_class_weight

from tunecraft.config import build_config, dump_config
from tunecraft.data import LabelMap
from tunecraft.errors import ConfigError
from tunecraft.evaluate.views import view_of
from tunecraft.metrics.labels import classification_metrics
from tunecraft.tasks.classification import Classification
from tunecraft.train.job import prepare_job

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

LABELS = [0, 0, 0, 0, 0, 1, 1, 2]  # imbalanced: 5 / 2 / 1
LOGITS = torch.tensor([[2.0, 0.1, -1.0], [0.3, 0.2, 0.1], [1.0, 1.5, 0.0], [0.0, 0.0, 3.0],
                       [1.2, -0.4, 0.3], [0.1, 0.9, 0.2], [2.0, 0.0, 0.5], [0.5, 0.4, 0.3]])


def fitted(setting) -> Classification:
    task = Classification()
    config = SimpleNamespace(train=SimpleNamespace(class_weights=setting))
    task.fit_training_data(config, LabelMap(["a", "b", "c"]), SimpleNamespace(labels=LABELS))
    return task


def loss_of(task: Classification) -> torch.Tensor:
    return task.loss_sum(SimpleNamespace(logits=LOGITS), {"labels": torch.tensor(LABELS)})


def test_balanced_weights_give_torchs_weighted_cross_entropy():
    task = fitted("balanced")
    sk = torch.tensor(compute_class_weight("balanced", classes=np.arange(3), y=np.array(LABELS)), dtype=torch.float32)
    assert torch.allclose(task.weight, torch.tensor([8 / 15, 8 / 6, 8 / 3]))
    assert torch.equal(task.weight, sk)
    y = torch.tensor(LABELS)
    weighted = loss_of(task)
    assert torch.allclose(weighted, F.cross_entropy(LOGITS, y, weight=sk, reduction="sum"))
    # torch's mean reduction divides by the weights of the batch's targets
    assert torch.allclose(weighted / sk[y].sum(), F.cross_entropy(LOGITS, y, weight=sk))
    plain = loss_of(fitted(None))
    assert torch.allclose(plain, F.cross_entropy(LOGITS, y, reduction="sum"))
    assert abs(float(weighted) - float(plain)) > 0.1
    assert sk[y].sum().item() == pytest.approx(len(LABELS))  # balanced weights keep the mean's scale


def test_a_mapping_weighs_the_named_labels_and_the_others_one():
    task = fitted({"c": 4.0, "a": 0.5})
    assert torch.equal(task.weight, torch.tensor([0.5, 1.0, 4.0]))
    expected = F.cross_entropy(LOGITS, torch.tensor(LABELS), weight=task.weight, reduction="sum")
    assert torch.allclose(loss_of(task), expected)


def test_an_unknown_label_in_the_mapping_is_named():
    with pytest.raises(ConfigError, match=r"train\.class_weights\.neutral: unknown label 'neutral'; the training "
                                          r"data has: a, b, c"):
        fitted({"a": 1.0, "neutral": 2.0})


def tiny(tmp_path, **train) -> dict:
    return {"name": "tinyweights", "output_dir": str(tmp_path), "seed": 7,
            "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": 32},
            "data": {"dataset": "mr", "max_train_samples": 32, "max_eval_samples": 8},
            "method": {"name": "full"},
            "train": {"max_steps": 1, "batch_size": 8, "precision": "fp32", "progress": False,
                      "tensorboard": False, "num_threads": 1, **train},
            "baselines": {"zero_shot": False}}


def test_a_bad_label_fails_in_prepare_job_before_any_write(tmp_path):
    config = build_config(tiny(tmp_path, class_weights={"pos": 2.0}))
    with pytest.raises(ConfigError, match=r"train\.class_weights\.pos: unknown label 'pos'; the training data "
                                          r"has: negative, positive"):
        prepare_job(config)
    assert not config.run_dir.exists()


def test_class_weights_are_recorded_in_the_resolved_config(tmp_path):
    config = build_config(tiny(tmp_path, class_weights={"positive": 3.0}))
    assert yaml.safe_load(dump_config(config))["train"]["class_weights"] == {"positive": 3.0}
    assert yaml.safe_load(dump_config(build_config(tiny(tmp_path))))["train"]["class_weights"] is None
    with pytest.raises(ConfigError, match="class_weights"):
        build_config(tiny(tmp_path, class_weights="inverse"))
    with pytest.raises(ConfigError, match="class_weights"):
        build_config(tiny(tmp_path, class_weights={"1": 0.0}))


def test_class_weights_are_refused_for_other_tasks(tmp_path):
    raw = {**tiny(tmp_path, class_weights="balanced"), "task": "token_classification"}
    raw["data"] = {"dataset": "conll2003", "max_train_samples": 8}
    with pytest.raises(ConfigError, match="train.class_weights: class weights are offered for task "
                                          "classification, not token_classification"):
        prepare_job(build_config(raw))


def test_macro_averages_cover_the_present_classes_and_name_the_absent():
    names = ["a", "b", "c"]
    gold, pred = [0, 0, 1, 1, 1], [0, 2, 1, 1, 0]  # "c" never gold, once predicted
    m = classification_metrics(gold, pred, names)
    assert m["macro_f1"] == f1_score(gold, pred, labels=[0, 1], average="macro", zero_division=0)
    assert m["macro_precision"] == precision_score(gold, pred, labels=[0, 1], average="macro", zero_division=0)
    assert m["macro_f1"] != f1_score(gold, pred, labels=[0, 1, 2], average="macro", zero_division=0)
    assert m["absent_classes"] == ["c"]
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert [m["per_class"][n]["support"] for n in names] == [2, 3, 0]
    assert m["micro_f1"] == f1_score(gold, pred, labels=[0, 1, 2], average="micro", zero_division=0)
    view = view_of("classification")
    table = view.result_blocks(m, names)[0][2]
    assert ("classes absent (not in macro averages)", "c") in table
    assert "macro-F1 0.6500 over the 2 classes present" in view.summary_line(m)


def test_no_absent_class_keeps_the_report_as_it_was():
    m = classification_metrics([0, 1, 2], [0, 1, 1], ["a", "b", "c"])
    assert m["absent_classes"] == []
    assert m["macro_f1"] == f1_score([0, 1, 2], [0, 1, 1], average="macro", zero_division=0)
    table = view_of("classification").result_blocks(m, ["a", "b", "c"])[0][2]
    assert not any(row[0].startswith("classes absent") for row in table)


def test_a_weighted_run_records_its_weights_and_the_absent_classes(tmp_path):
    from tests.conftest import tiny_classifier

    run_dir = tiny_classifier(tmp_path, "weighted", train_samples=32, eval_samples=8, max_steps=1,
                              class_weights="balanced")
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["class_weights"] == "balanced"
    metrics = json.loads((run_dir / "summary.json").read_text())["metrics"]
    gold = {row["label"] for row in map(json.loads, (run_dir / "predictions.jsonl").read_text().splitlines())}
    assert metrics["absent_classes"] == sorted({"negative", "positive"} - gold)


def test_the_balanced_sampler_draws_each_label_about_equally_and_exactly_by_seed_and_epoch():
    """90 `a` and 10 `b`: an epoch's balanced draw holds about 50 of each (within 3 standard deviations of
    Binomial(100, 0.5) over 20 epochs), keeps the split's size and batch count, repeats exactly for the same
    (seed, epoch), and `shuffle` visits each example once."""
    from tunecraft.train.loop import epoch_windows, planned_steps

    labels = [0] * 90 + [1] * 10
    lengths = [5 + i % 7 for i in range(100)]
    cfg = SimpleNamespace(batch_size=8, grad_accum=1, group_by_length=True, sampler="balanced", epochs=2,
                          max_steps=None)

    def drawn(epoch):
        return [i for window in epoch_windows(lengths, cfg, 7, epoch, labels=labels) for b in window for i in b]

    for epoch in range(20):
        picks = drawn(epoch)
        assert len(picks) == 100 and abs(sum(labels[i] for i in picks) - 50) <= 15
    assert drawn(3) == drawn(3) and drawn(3) != drawn(4)
    assert planned_steps(lengths, cfg, 7) == 2 * len(epoch_windows(lengths, cfg, 7, 0, labels=labels))
    plain = SimpleNamespace(**{**vars(cfg), "sampler": "shuffle"})
    once = [i for window in epoch_windows(lengths, plain, 7, 0, labels=labels) for b in window for i in b]
    assert sorted(once) == list(range(100))


def test_the_balanced_sampler_is_recorded_and_refused_for_other_tasks(tmp_path):
    assert yaml.safe_load(dump_config(build_config(tiny(tmp_path, sampler="balanced"))))["train"]["sampler"] == \
        "balanced"
    raw = {**tiny(tmp_path, sampler="balanced"), "task": "token_classification"}
    raw["data"] = {"dataset": "conll2003", "max_train_samples": 8}
    with pytest.raises(ConfigError, match="train.sampler: the balanced sampler is offered for task classification"):
        prepare_job(build_config(raw))


def test_a_run_with_the_balanced_sampler_trains_its_steps_and_records_the_setting(tmp_path):
    from tests.conftest import tiny_classifier

    run_dir = tiny_classifier(tmp_path, "sampled", train_samples=32, eval_samples=8, max_steps=2, sampler="balanced")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["sampler"] == "balanced"
    assert summary["metrics"]["samples"] == 8 and summary["steps"] == 2
