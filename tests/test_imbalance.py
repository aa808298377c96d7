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
from tunecraft.evaluate.metrics import classification_metrics
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
    task = Classification()
    table = task.result_blocks(m, names)[0][2]
    assert ("classes absent (not in macro averages)", "c") in table
    assert "macro-F1 0.6500 over the 2 classes present" in task.summary_line(m)


def test_no_absent_class_keeps_the_report_as_it_was():
    m = classification_metrics([0, 1, 2], [0, 1, 1], ["a", "b", "c"])
    assert m["absent_classes"] == []
    assert m["macro_f1"] == f1_score([0, 1, 2], [0, 1, 1], average="macro", zero_division=0)
    table = Classification().result_blocks(m, ["a", "b", "c"])[0][2]
    assert not any(row[0].startswith("classes absent") for row in table)


def test_a_weighted_run_records_its_weights_and_the_absent_classes(tmp_path):
    from tests.conftest import tiny_classifier

    run_dir = tiny_classifier(tmp_path, "weighted", train_samples=32, eval_samples=8, max_steps=1,
                              class_weights="balanced")
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["class_weights"] == "balanced"
    metrics = json.loads((run_dir / "summary.json").read_text())["metrics"]
    gold = {row["label"] for row in map(json.loads, (run_dir / "predictions.jsonl").read_text().splitlines())}
    assert metrics["absent_classes"] == sorted({"negative", "positive"} - gold)
