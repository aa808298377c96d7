"""The run doctor (evaluate/doctor.py, `tunecraft doctor RECIPE|RUN`): each finding with its numbers, on slices of
the bundled data and tiny runs; a NaN loss ends a run as failed with nothing exported."""

from __future__ import annotations

import csv
import json
import math

import pytest

from tests.conftest import tiny_classifier
from tunecraft.cli import main
from tunecraft.config import build_config
from tunecraft.data.bundled import read_bundled
from tunecraft.data.ner import Sentence
from tunecraft.diagnose import doctor
from tunecraft.errors import TrainingFailed
from tunecraft.evaluate.doctor import IMBALANCE_RATIO, TINY_CLASS, VIEWS, balance_findings, normalise
from tunecraft.plugins import LossTerm
from tunecraft.train import train

TINY = {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": 512}


def _csv(path, rows) -> str:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows((e.text, e.label) for e in rows)
    return str(path)


def _mr(label: str, n: int, skip: int = 0) -> list:
    return [e for e in read_bundled("mr") if e.label == label][skip : skip + n]


def _recipe(tmp_path, name="doc", model=None, **data) -> str:
    raw = {"name": name, "output_dir": str(tmp_path / "runs"), "seed": 7, "model": model or TINY, "data": data,
           "method": {"name": "full"}, "train": {"max_steps": 2, "batch_size": 8, "precision": "fp32",
                                                  "progress": False, "tensorboard": False, "num_threads": 1}}
    path = tmp_path / f"{name}.json"  # JSON is YAML
    path.write_text(json.dumps(raw), encoding="utf-8")
    return str(path)


def _by_check(findings: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in findings:
        out.setdefault(f["check"], []).append(f)
    return out


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    """train: 200 positive and 10 negative mr reviews (20:1); test: 30 other reviews of each label, 6 of them
    repeated from train (4 exactly, 2 with another case, full-width letters and more punctuation)."""
    tmp = tmp_path_factory.mktemp("doctor-data")
    pos, neg = _mr("positive", 200), _mr("negative", 10)
    test = _mr("positive", 27, skip=200) + _mr("negative", 27, skip=10)
    repeated = pos[:3] + neg[:1]
    near = [type(e)(text=e.text.upper().replace("a", "ａ") + " !!", label=e.label) for e in pos[3:5]]
    return {"train": _csv(tmp / "train.csv", pos + neg), "test": _csv(tmp / "test.csv", test + repeated + near),
            "validation": _csv(tmp / "validation.csv", _mr("positive", 10, 260) + _mr("negative", 10, 60))}


def test_an_imbalanced_slice_gives_the_imbalance_finding_with_the_key_to_set(tmp_path, splits):
    result = doctor(_recipe(tmp_path, **splits))
    found = _by_check(result["findings"])
    imbalance = found["imbalance"][0]
    assert imbalance["severity"] == "warn" and imbalance["stage"] == "data"
    assert imbalance["numbers"] == {"ratio": 20.0, "largest": ["positive", 200], "smallest": ["negative", 10]}
    assert "imbalanced 20.0:1 ('positive' 200 examples, 'negative' 10)" in imbalance["message"]
    assert imbalance["advice"] == "set train.class_weights: balanced (or train.sampler: balanced)"
    assert found["tiny_classes"][0]["numbers"] == {"classes": {"negative": 10}, "threshold": TINY_CLASS}
    assert IMBALANCE_RATIO <= 20.0


def test_an_overlapping_split_gives_the_overlap_finding_with_its_count(tmp_path, splits):
    result = doctor(_recipe(tmp_path, **splits))
    overlap = [f for f in _by_check(result["findings"])["overlap"] if f["numbers"]["split"] == "test"]
    assert len(overlap) == 1
    assert overlap[0]["numbers"] == {"split": "test", "against": "train", "exact": 4, "near": 2, "texts": 60}
    assert overlap[0]["message"].startswith("6 of 60 test texts also appear in train (4 exact, 2 near-duplicates")
    assert overlap[0]["severity"] == "warn"


def test_near_duplicates_share_their_normalised_text():
    assert normalise("Ｇｏｏｄ   FILM,  really!!") == normalise("good film really") == "good film really"
    assert normalise("good film") != normalise("good films")


def test_the_english_minilm_on_chinese_reviews_gives_a_high_unknown_rate(tmp_path):
    from tunecraft.models import load_tokenizer, resolve_base

    zh = doctor(_recipe(tmp_path, "zh", {"base": "minilm-l6", "max_length": 512}, dataset="zh-reviews",
                        max_train_samples=200, max_eval_samples=20))
    tok = _by_check(zh["findings"])["tokenizer"][0]
    assert tok["severity"] == "warn" and "does not fit the data's language" in tok["message"]
    assert tok["numbers"]["per"] == "character" and tok["numbers"]["texts"] == 200
    # the same count made here, from the same training slice
    tokenizer = load_tokenizer(resolve_base("minilm-l6"))
    from tunecraft.data import load_classification_data

    data = load_classification_data(build_config(json.loads(open(tmp_path / "zh.json").read())).data)
    ids = tokenizer([e.text for e in data.train], add_special_tokens=False)["input_ids"]
    unknown = sum(t == tokenizer.unk_token_id for row in ids for t in row) / sum(map(len, ids))
    assert tok["numbers"]["unknown_rate"] == round(unknown, 4) and unknown > 0.5
    en = doctor(_recipe(tmp_path, "en", {"base": "minilm-l6", "max_length": 512}, dataset="mr",
                        max_train_samples=200, max_eval_samples=20))
    tok = _by_check(en["findings"])["tokenizer"][0]
    assert tok["severity"] == "info" and tok["numbers"]["per"] == "word" and tok["numbers"]["unknown_rate"] < 0.01


def test_ner_entity_types_are_counted_for_tiny_types():
    sentences = [Sentence(list("张三在北京"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]) for _ in range(30)]
    sentences += [Sentence(list("新华社"), ["B-ORG", "I-ORG", "I-ORG"]) for _ in range(2)]
    sentences += [Sentence(list("上海"), ["B-LOC", "I-LOC"]) for _ in range(5)]
    found = {f.check: f for f in balance_findings(VIEWS["token_classification"], {"train": sentences})}
    assert found["imbalance"].numbers == {"ratio": 17.5, "largest": ["LOC", 35], "smallest": ["ORG", 2]}
    assert found["tiny_classes"].numbers["classes"] == {"ORG": 2}
    assert "1 of 3 entity types have fewer than 20 training examples ('ORG' 2)" in found["tiny_classes"].message


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_classifier(tmp_path_factory.mktemp("runs"), "doctor-run")


def test_a_run_carries_its_findings_in_summary_and_report(run):
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    cut = [f for f in summary["doctor"] if f["check"] == "truncation" and f["numbers"]["split"] == "train"]
    assert cut and cut[0]["numbers"]["long"] == summary["truncated"]["train"] > 0  # max_length 64 on mr
    longest = cut[0]["numbers"]["max"]
    assert 128 < longest <= 256  # the advice: the power of two that reads the longest whole
    assert cut[0]["advice"] == "model.max_length=256 or model.long_documents: windows"
    report = (run / "report.md").read_text(encoding="utf-8")
    warns = sum(f["severity"] == "warn" for f in summary["doctor"])
    assert f"## Doctor: {warns} warning" in report and cut[0]["message"] in report


def test_a_run_whose_predictions_miss_a_class_gives_never_predicted(run, tmp_path):
    import shutil

    copy = tmp_path / "one-class"
    shutil.copytree(run, copy)
    path = copy / "predictions.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows = [{**r, "prediction": "positive"} for r in rows]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    negatives = sum(r["label"] == "negative" for r in rows)
    found = _by_check(doctor(copy)["findings"])["never_predicted"][0]
    assert found["numbers"] == {"classes": {"negative": negatives}, "present": 2}
    assert found["message"] == ("1 of 2 classes of the test split are never predicted: "
                                f"'negative' ({negatives} test examples)")


def test_a_result_below_its_baseline_is_a_finding_with_both_numbers(run, tmp_path):
    import shutil

    copy = tmp_path / "below"
    shutil.copytree(run, copy)
    summary = json.loads((copy / "summary.json").read_text(encoding="utf-8"))
    summary["baselines"] = [{"name": "TF-IDF + LinearSVC", "bar": True, "metrics": {"accuracy": 0.99,
                                                                                   "macro_f1": 0.98}}]
    (copy / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    found = _by_check(doctor(copy)["findings"])["baseline"][0]
    m = summary["metrics"]
    gaps = {"accuracy": [0.99, m["accuracy"]], "macro_f1": [0.98, m["macro_f1"]]}
    assert found["numbers"] == {"baseline": "TF-IDF + LinearSVC", "baseline_vs_run": gaps}
    assert found["message"].startswith(f"the fine-tune is below baseline: TF-IDF + LinearSVC 99.0% > "
                                       f"{100 * m['accuracy']:.1f}% (accuracy)")


def test_the_cli_exit_code_and_output(tmp_path, splits, capsys):
    assert main(["doctor", _recipe(tmp_path, **splits)]) == 1
    out = capsys.readouterr().out
    assert "warn  imbalance: training classes are imbalanced 20.0:1" in out
    assert "→ set train.class_weights: balanced (or train.sampler: balanced)" in out
    clean = _recipe(tmp_path, "clean", dataset="mr", max_train_samples=64, max_eval_samples=16)
    assert main(["doctor", clean]) == 0
    out = capsys.readouterr().out
    assert "doctor: 0 warnings" in out and "info  tokenizer" in out
    assert main(["doctor", str(tmp_path / "missing.yaml")]) == 2


def test_a_nan_loss_fails_the_run_naming_the_step_and_writes_no_model(tmp_path):
    steps = []

    def poison(model, outputs, batch):
        steps.append(1)
        return outputs.logits.sum() * (math.nan if len(steps) == 2 else 0.0)

    config = build_config(json.loads(open(_recipe(tmp_path, "nan", dataset="mr", max_train_samples=64,
                                                  max_eval_samples=16)).read()))
    with pytest.raises(TrainingFailed, match=r"the training loss is nan at step 2 \(diverged\)"):
        train(config, plugins=[LossTerm(poison)])
    run = config.run_dir
    assert not (run / "model").exists() and not (run / "summary.json").exists()
    last = json.loads((run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert last == {"type": "failed", "step": 2, "loss": "nan"}
    found = _by_check(doctor(run)["findings"])["loss"][0]
    assert found["numbers"] == {"step": 2, "loss": "nan"} and found["severity"] == "warn"


def test_a_diverged_tuning_trial_is_pruned_and_the_search_goes_on(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    import tunecraft.tune as tuning

    real, bad = tuning.train, 0.5

    def train_or_diverge(config, **kwargs):
        if config.train.lr == bad:  # as the loop fails on a NaN loss
            raise TrainingFailed(f"{config.run_dir}: the training loss is nan at step 1 (diverged)")
        return real(config, **kwargs)

    monkeypatch.setattr(tuning, "train", train_or_diverge)
    raw = json.loads(open(_recipe(tmp_path, "search", dataset="mr", max_train_samples=32, max_eval_samples=16))
                     .read())
    raw["tune"] = {"trials": 2, "startup_trials": 1, "seed": 0,
                   "space": {"train.lr": {"type": "categorical", "choices": [bad, 1e-3]}},
                   "first": [{"train.lr": bad}, {"train.lr": 1e-3}]}
    result = tuning.tune(build_config(raw), log=lambda line: None)
    assert (result["complete"], result["pruned"], result["best_trial"]) == (1, 1, 1)
    assert result["best_params"] == {"train.lr": 1e-3}


def test_train_prints_the_findings_after_the_metrics(tmp_path, capsys):
    recipe = _recipe(tmp_path, "printed", {**TINY, "max_length": 64}, dataset="mr", max_train_samples=64,
                     max_eval_samples=16)
    assert main(["train", recipe, "--no-progress"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "runs" / "printed" / "summary.json").read_text(encoding="utf-8"))
    warns = sum(f["severity"] == "warn" for f in summary["doctor"])
    assert warns >= 3  # max_length 64 cuts texts of each split
    head = f"doctor: {warns} warnings, {len(summary['doctor']) - warns} note"
    assert out.index("test: accuracy") < out.index(head) < out.index("report: ")
    assert "  warn  truncation: " in out and "→ model.max_length=256 or model.long_documents: windows" in out


def test_the_studio_counts_a_runs_warnings_and_shows_a_nan_run_as_failed(run, tmp_path):
    import shutil

    from tunecraft.studio.runs import RunIndex

    class NoLaunches:
        def status(self, name):
            return None

    shutil.copytree(run, tmp_path / "finished")
    (tmp_path / "nan").mkdir()
    shutil.copy(run / "config.yaml", tmp_path / "nan" / "config.yaml")
    (tmp_path / "nan" / "metrics.jsonl").write_text('{"type": "failed", "step": 2, "loss": "nan"}\n')
    rows = {r["name"]: r for r in RunIndex(tmp_path, NoLaunches()).rows()}
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert rows["finished"]["doctor"] == sum(f["severity"] == "warn" for f in summary["doctor"]) > 0
    assert rows["nan"]["status"] == "failed" and rows["nan"]["steps"] == 2
