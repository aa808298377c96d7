"""Issue #24, as a user with long documents of their own met it: texts cut at max_length are counted on the
terminal, or read as windows; eval of the training file scores the run's split; robustness and the resolved
config on user data; the export answers as the run did in plain transformers; validation lines during
training; a CJK font for plots; resume after a kill during the first checkpoint."""

import csv
import json
import logging
import random
import shutil
import warnings

import pytest
import torch
import yaml

from tunecraft.config import DataConfig, build_config, dump_config
from tunecraft.data.dataset import Encoded
from tunecraft.data.long_documents import encode_windows, per_document
from tunecraft.evaluate.runs import evaluate_run, predict
from tunecraft.train import train
from tunecraft.train.checkpoint import remove_unfinished
from tunecraft.train.job import prepare_job

MAX = 32


def _rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Texts of 10–120 characters (a character tokenizer: as many tokens); the label's word recurs all through."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = [rng.choice(["the", "a", "plot", "scene", "cast"]) for _ in range(rng.randint(2, 24))]
        for j in range(0, len(words), 6):
            words.insert(j, "good" if label == "pos" else "bad")
        rows.append((" ".join(words), label))
    return rows


def _write_csv(path, rows) -> str:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def long_csv(tmp_path_factory):
    return _write_csv(tmp_path_factory.mktemp("data") / "reviews.csv", _rows(100, 0))


def _config(out, name, train_file, **model):
    return build_config({
        "name": name, "output_dir": str(out), "seed": 3, "data": {"train": train_file},
        "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": MAX, "dropout": 0.0, **model},
        "train": {"epochs": 2, "batch_size": 16, "lr": 2e-3, "precision": "fp32", "progress": False,
                  "tensorboard": False},
        "baselines": {"zero_shot": False}})


@pytest.fixture(scope="module")
def truncate_run(long_csv, tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("runs"), "cut", long_csv)
    return config, train(config)


@pytest.fixture(scope="module")
def windows_run(long_csv, tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("runs"), "windows", long_csv, long_documents="windows",
                     window_stride=8, window_pool="mean")
    return config, train(config)


# -- silent truncation ---------------------------------------------------------------------------------------

def test_texts_longer_than_max_length_are_counted_on_the_terminal_once_per_split(long_csv, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        prepare_job(_config(tmp_path, "cut", long_csv))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    training = [m for m in lines if "training texts" in m]
    assert len(training) == 1
    assert " of 80 training texts are longer than max_length 32 tokens (median " in training[0]
    assert "they are cut, set model.max_length or model.long_documents=windows" in training[0]
    assert sum("validation texts" in m for m in lines) == 1 and sum("test texts" in m for m in lines) == 1


def test_predict_says_that_it_cuts_a_long_text(truncate_run, caplog):
    config, _ = truncate_run
    with caplog.at_level(logging.WARNING):
        predict(config.run_dir, ["good plot " * 20, "bad"])
    assert any("1 of 2 texts to predict are longer than max_length 32 tokens" in r.getMessage()
               for r in caplog.records)


# -- long documents as windows ---------------------------------------------------------------------------------

def test_window_logits_pool_back_to_one_row_per_document():
    enc = Encoded([[1], [2], [3]], None, [1, 1, 0], 0, sample=[0, 0, 1], options={"pool": "mean", "documents": 2})
    logits = torch.tensor([[1.0, 3.0], [3.0, -1.0], [5.0, 0.0]])
    pooled, labels = per_document(logits, enc)
    assert torch.equal(pooled, torch.tensor([[2.0, 1.0], [5.0, 0.0]])) and labels == [1, 0]
    enc.options["pool"] = "max"
    assert torch.equal(per_document(logits, enc)[0], torch.tensor([[3.0, 3.0], [5.0, 0.0]]))
    whole = Encoded([[1]], None, [0], 0)  # truncation: features are documents already
    assert per_document(logits[:1], whole)[0] is not None and per_document(logits[:1], whole)[1] == [0]


def test_windows_cover_every_token_and_share_the_stride():
    from tunecraft.models.sizes import char_tokenizer

    tok = char_tokenizer(["abcdefghij klmnopqrstuvwxyz"])
    text = "abcdefghijklmnopqrstuvwxyz"
    enc = encode_windows(tok, [text, "ab"], None, 10, 3, [1, 0])
    assert enc.sample[-1] == 1 and enc.sample.count(1) == 1 and enc.labels == [1] * enc.sample.count(0) + [0]
    first, second = enc.input_ids[0][1:-1], enc.input_ids[1][1:-1]
    assert first[-3:] == second[:3]  # consecutive windows share `stride` tokens
    covered = {i for ids in enc.input_ids[: enc.sample.count(0)] for i in ids[1:-1]}
    assert covered == set(tok(text, add_special_tokens=False)["input_ids"])
    assert enc.source_lengths == [28, 4] and all(len(ids) <= 10 for ids in enc.input_ids)


def test_windows_run_trains_on_windows_and_scores_documents_in_eval_predict_and_serve(windows_run, caplog):
    from fastapi.testclient import TestClient

    from tunecraft.serve.app import ServeSettings, create_app

    config, summary = windows_run
    assert summary["features"]["train"] > summary["sizes"]["train"]  # each window a training feature
    assert summary["metrics"]["samples"] == summary["sizes"]["test"]  # scored per document
    rows = (config.run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(rows) == summary["sizes"]["test"]
    meta = json.loads((config.run_dir / "model" / "tunecraft.json").read_text(encoding="utf-8"))
    assert (meta["long_documents"], meta["window_stride"], meta["window_pool"]) == ("windows", 8, "mean")

    texts = ["good plot " * 12, "bad cast " * 3]
    with caplog.at_level(logging.INFO):
        predicted = predict(config.run_dir, texts)
    assert any("read as" in r.getMessage() and "overlapping windows" in r.getMessage() for r in caplog.records)
    with TestClient(create_app(ServeSettings(run=str(config.run_dir), batching=False)),
                    base_url="http://127.0.0.1") as client:
        served = client.post("/v1/classify", json={"texts": texts}).json()["predictions"]
    for p, s in zip(predicted, served):
        assert p["label"] == s["label"]
        assert p["probabilities"] == pytest.approx(s["probabilities"], abs=1e-5)
    assert evaluate_run(config.run_dir, config.data.train)["samples"] == summary["sizes"]["test"]


# -- eval of the user's own file ------------------------------------------------------------------------------

def test_eval_of_the_training_file_scores_the_runs_split_and_never_training_rows(truncate_run, tmp_path, caplog):
    config, summary = truncate_run
    with caplog.at_level(logging.WARNING):
        result = evaluate_run(config.run_dir, config.data.train, split="test")
    assert result["samples"] == summary["sizes"]["test"] == 10
    assert "is the run's training file: scoring the run's own test split" in result["note"]
    assert any(result["note"] in r.getMessage() for r in caplog.records)
    scored = [json.loads(line)["text"] for line in
              (config.run_dir / "evals" / "reviews-test" / "predictions.jsonl").read_text().splitlines()]
    run_test = [json.loads(line)["text"] for line in (config.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert scored == run_test

    other = shutil.copy(config.data.train, tmp_path / "elsewhere.csv")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = evaluate_run(config.run_dir, str(other), split="test")
    assert result["samples"] == 100
    assert "scoring every row of" in result["note"] and "not the run's training file" in result["note"]
    assert any("scoring every row" in r.getMessage() for r in caplog.records)


def test_a_split_given_as_its_own_file_is_that_file_and_is_never_carved_again(tmp_path):
    from tunecraft.errors import TunecraftError
    from tunecraft.evaluate.runs import run_file_split
    from tunecraft.tasks import build_task

    task = build_task("classification")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": {"train": "a.csv", "test": "a.csv"}}))
    assert run_file_split(tmp_path, task, "a.csv", "test") is None  # the test file itself: scored whole
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": {"train": "a.csv", "test": "b.csv"}}))
    with pytest.raises(TunecraftError, match="its test split came from b.csv: evaluate on that file"):
        run_file_split(tmp_path, task, "a.csv", "test")


# -- robustness and the resolved config on user data ---------------------------------------------------------

def test_file_data_does_not_carry_the_default_bundled_set():
    assert DataConfig(train="my.csv").dataset is None
    assert DataConfig.model_validate({"dataset": "mr", "train": "my.csv"}).dataset is None  # an older config.yaml
    assert DataConfig().dataset == "mr"
    assert "dataset: null" in dump_config(build_config({"data": {"train": "my.csv"}}))


def test_robustness_on_a_user_data_run_says_there_are_no_default_sets_and_runs_the_rest(truncate_run, caplog):
    from tunecraft.evaluate.robustness import robustness

    config, _ = truncate_run
    assert yaml.safe_load((config.run_dir / "config.yaml").read_text())["data"]["dataset"] is None
    with caplog.at_level(logging.WARNING):
        result = robustness(config.run_dir, perturbations=["typos", "word-drop"], max_examples=10)
    assert result["ood"] == {} and "pass --ood FILE" in result["ood_note"]
    assert any("no out-of-domain sets" in r.getMessage() for r in caplog.records)
    assert result["perturbations"]["typos"]["samples"] > 0 and "ece" in result["calibration"]
    assert "no out-of-domain sets" in (config.run_dir / "robustness" / "robustness.md").read_text()


# -- the export answers as the run did ------------------------------------------------------------------------

def test_plain_transformers_reproduces_the_runs_predictions(truncate_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config, _ = truncate_run
    folder = config.run_dir / "model"
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert tokenizer.model_max_length == MAX
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    rows = [json.loads(line) for line in (config.run_dir / "predictions.jsonl").read_text().splitlines()]
    batch = tokenizer([r["text"] for r in rows], truncation=True, padding=True, return_tensors="pt")
    assert batch["input_ids"].shape[1] == MAX  # long texts are cut where training cut them
    with torch.no_grad():
        probs = torch.softmax(model(**batch).logits, dim=-1)
    labels = [model.config.id2label[i] for i in probs.argmax(-1).tolist()]
    assert labels == [r["prediction"] for r in rows]
    expected = torch.tensor([[r["probabilities"][model.config.id2label[i]] for i in range(probs.shape[1])]
                             for r in rows])
    assert torch.allclose(probs, expected, atol=1e-4)


# -- validation lines during training --------------------------------------------------------------------------

def test_each_validation_is_printed_when_progress_is_on(long_csv, tmp_path, capsys):
    printed = {}
    for progress in (True, False):
        config = _config(tmp_path, f"progress-{progress}", long_csv)
        config.train.max_steps, config.train.eval_every, config.train.progress = 4, 2, progress
        train(config)
        printed[progress] = [line for line in capsys.readouterr().out.splitlines() if ": validation " in line]
    assert [line.split(":")[0] for line in printed[True]] == ["step 2", "step 4"]
    assert "validation accuracy 0." in printed[True][0] and "macro_f1 " in printed[True][0]
    assert printed[False] == []  # quiet without the progress bar (tests, logs)


# -- CJK labels in plots ------------------------------------------------------------------------------------------

def test_chinese_labels_get_a_cjk_font_or_a_warning(tmp_path, caplog, monkeypatch):
    from matplotlib import rcParams

    from tunecraft import fonts
    from tunecraft.report import plot_confusion

    labels = ["正面", "负面"]
    assert fonts.use_cjk_font(["positive", "negative"]) is None  # nothing to do for Latin labels
    family = fonts.use_cjk_font(labels)  # paperang-p2-fonts-cjk is a pinned dependency: a font is always found
    assert family is not None and family in rcParams["font.family"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        plot_confusion([[3, 1], [0, 4]], labels, labels, tmp_path / "confusion.png")
    assert not [w for w in seen if "missing from font" in str(w.message)]

    monkeypatch.setattr(fonts, "cjk_family", lambda: None)
    fonts._warn_missing.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert fonts.use_cjk_font(labels) is None
    assert any("no CJK font was found" in r.getMessage() and fonts.REQUIREMENT in r.getMessage()
               for r in caplog.records)


# -- resume after a kill during the first checkpoint ------------------------------------------------------------

def test_resume_without_a_complete_checkpoint_starts_again_and_clears_half_written_folders(long_csv, tmp_path,
                                                                                          caplog):
    config = _config(tmp_path, "killed", long_csv)
    config.train.max_steps = 3
    train(config)
    run = config.run_dir
    # as a kill inside the first checkpoint write leaves it: config.yaml, a few metrics, a temporary folder
    for path in run.iterdir():
        if path.name not in ("config.yaml", "metrics.jsonl"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["data"]["dataset"] = "mr"  # as versions before this fix wrote it beside data.train
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    half = run / "checkpoints" / ".step-2-k1ll3d0"
    half.mkdir(parents=True)
    (half / "trainable.safetensors").write_bytes(b"\0" * 1000)
    with caplog.at_level(logging.WARNING):
        summary = train(config, resume=True)
    assert any("no complete checkpoint in" in r.getMessage() and "starting again from step 0" in r.getMessage()
               for r in caplog.records)
    assert summary["steps"] == 3 and (run / "model" / "tunecraft.json").is_file()
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # the killed attempt's lines are gone


def test_unfinished_checkpoint_writes_are_removed_and_a_displaced_copy_goes_back(tmp_path):
    (tmp_path / ".step-4-abcd1234").mkdir()  # half-written
    (tmp_path / ".step-2-old").mkdir()  # step-2 was being replaced when the process died
    (tmp_path / ".step-2-old" / "trainer_state.json").write_text("{}")
    (tmp_path / "step-1").mkdir()
    removed = remove_unfinished(tmp_path)
    assert [p.name for p in removed] == [".step-4-abcd1234"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1", "step-2"]


def test_eval_scores_in_the_precision_the_run_scored_in(tmp_path):
    """`eval --precision auto` on a run folder takes the run's own scoring precision (summary.json), so its score
    on the run's split is the run's on any machine; it says which one it used."""
    from tests.conftest import tiny_classifier

    bf16 = tiny_classifier(tmp_path, "bf16", precision="bf16")
    fp32 = tiny_classifier(tmp_path, "fp32")
    auto = evaluate_run(bf16, "mr", split="test")
    assert auto["precision"] == "bf16"
    assert auto["metrics"] == evaluate_run(bf16, "mr", split="test", precision="bf16")["metrics"]
    assert evaluate_run(bf16, "mr", split="test", precision="fp32")["precision"] == "fp32"
    assert evaluate_run(fp32, "mr", split="test")["precision"] == "fp32"
