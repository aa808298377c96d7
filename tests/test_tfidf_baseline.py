"""The TF-IDF + LinearSVC baseline of every classification run: its numbers are sklearn's on the run's own
splits, sentence pairs are joined, and a fine-tuned result below it is marked on the terminal, in report.md
and in `tunecraft report`."""

import json
import random

import yaml
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.svm import LinearSVC

from tunecraft.cli import main
from tunecraft.config import build_config
from tunecraft.data.readers import Example
from tunecraft.evaluate.baselines import below_baseline, classification_baselines, tfidf_svm
from tunecraft.evaluate.views import view_of
from tunecraft.tasks import build_task

classification = build_task("classification")

LABELS = ["negative", "positive"]


def direct(train_texts, train_y, test_texts, test_y, seed):
    """The pipeline written out with sklearn alone: what the baseline promises to equal."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    svm = LinearSVC(random_state=seed).fit(vectorizer.fit_transform(train_texts), train_y)
    pred = svm.predict(vectorizer.transform(test_texts))
    return accuracy_score(test_y, pred), f1_score(test_y, pred, average="macro"), len(vectorizer.vocabulary_)


def test_the_baseline_equals_a_direct_sklearn_pipeline_on_the_runs_own_splits(tmp_path):
    config = build_config({"output_dir": str(tmp_path), "seed": 3,
                           "data": {"dataset": "mr", "max_train_samples": 400, "max_eval_samples": 120},
                           "baselines": {"zero_shot": False}})
    data = classification.load_data(config.data)
    (result,) = classification_baselines(config, data, None)
    ids = data.label_map.label2id
    accuracy, macro_f1, features = direct([e.text for e in data.train], [ids[e.label] for e in data.train],
                                          [e.text for e in data.test], [ids[e.label] for e in data.test], 3)
    assert result["name"] == "TF-IDF + LinearSVC" and result["bar"] is True
    assert result["metrics"]["samples"] == len(data.test) == 120
    assert result["metrics"]["accuracy"] == accuracy and result["metrics"]["macro_f1"] == macro_f1
    assert result["features"] == features
    off = config.model_copy(update={"baselines": config.baselines.model_copy(update={"tfidf": False})})
    assert classification_baselines(off, data, None) == []


def test_a_sentence_pair_is_joined_so_words_of_the_second_text_count():
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "kappa"]

    def example(label):  # the label shows only in the second text
        return Example(" ".join(rng.sample(words, 3)), label, f"{rng.choice(words)} {label}-cue")

    train = [example(LABELS[i % 2]) for i in range(40)]
    test = [example(LABELS[i % 2]) for i in range(20)]
    (result,) = tfidf_svm(train, test, LABELS)
    joined = [f"{e.text} [SEP] {e.text_pair}" for e in train], [f"{e.text} [SEP] {e.text_pair}" for e in test]
    accuracy, macro_f1, _ = direct(joined[0], [LABELS.index(e.label) for e in train], joined[1],
                                   [LABELS.index(e.label) for e in test], 0)
    assert result["metrics"]["accuracy"] == accuracy == 1.0 and result["metrics"]["macro_f1"] == macro_f1
    assert tfidf_svm(train[:1] * 3, test, LABELS) == []  # one label only: nothing to fit
    one_letter = [Example("a !", LABELS[i % 2]) for i in range(4)]  # no word of two characters
    assert tfidf_svm(one_letter, one_letter, LABELS) == []


def test_below_baseline_names_each_headline_metric_the_fine_tune_misses():
    bar = {"name": "TF-IDF + LinearSVC", "bar": True, "metrics": {"accuracy": 0.785, "macro_f1": 0.70}}
    other = {"name": "zero-shot (embedding similarity)", "metrics": {"accuracy": 0.99, "macro_f1": 0.99}}
    headline = ("accuracy", "macro_f1")
    assert below_baseline({"accuracy": 0.603, "macro_f1": 0.71}, [bar, other], headline) == [
        "below baseline: TF-IDF + LinearSVC 78.5% > 60.3% (accuracy)"]
    assert below_baseline({"accuracy": 0.5, "macro_f1": 0.4}, [bar], headline) == [
        "below baseline: TF-IDF + LinearSVC 78.5% > 50.0% (accuracy), 70.0% > 40.0% (macro_f1)"]
    assert below_baseline({"accuracy": 0.785, "macro_f1": 0.70}, [bar, other], headline) == []  # a tie is no miss


def test_a_run_below_the_baseline_is_marked_on_the_terminal_and_in_both_reports(tmp_path, capsys):
    """Two steps of a tiny scratch encoder against TF-IDF on 600 movie reviews: the fine-tune is the weaker."""
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "tiny", "output_dir": str(tmp_path / "runs"), "seed": 7,
        "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": 64},
        "data": {"dataset": "mr", "max_train_samples": 600, "max_eval_samples": 200},
        "method": {"name": "full"},
        "train": {"max_steps": 2, "batch_size": 8, "precision": "fp32", "progress": False, "tensorboard": False,
                  "num_threads": 1},
        "baselines": {"zero_shot": False}}), encoding="utf-8")
    assert main(["train", str(recipe)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text(encoding="utf-8"))
    (tfidf,) = summary["baselines"]
    ours, theirs = summary["metrics"]["accuracy"], tfidf["metrics"]["accuracy"]
    assert ours < theirs  # the set-up this test needs
    mark = f"below baseline: TF-IDF + LinearSVC {100 * theirs:.1f}% > {100 * ours:.1f}% (accuracy)"
    assert f"baseline TF-IDF + LinearSVC: {view_of('classification').summary_line(tfidf['metrics'])}" in out
    assert mark in out
    report = (tmp_path / "runs" / "tiny" / "report.md").read_text(encoding="utf-8")
    assert mark in report and "| TF-IDF + LinearSVC |" in report
    assert main(["report", str(tmp_path / "runs" / "tiny")]) == 0
    assert f"- tiny: {mark}" in capsys.readouterr().out


def test_unspaced_scripts_get_character_grams_and_a_real_bar():
    """Chinese reviews: word tokens would be whole clauses, so the baseline uses character 1-3 grams and says so."""
    rng = random.Random(0)
    good, bad = ["很好", "喜欢", "满意", "推荐"], ["太差", "失望", "退货", "难用"]

    def review(i):
        label = LABELS[i % 2]
        return Example("这个东西" + rng.choice(bad if label == "negative" else good) + "，我们", label)

    train, test = [review(i) for i in range(60)], [review(i) for i in range(20)]
    (result,) = tfidf_svm(train, test, LABELS)
    assert result["note"].startswith("character 1-3 grams") and result["metrics"]["accuracy"] == 1.0
    (english,) = tfidf_svm([Example(f"a {w} film", LABELS[i % 2]) for i, w in enumerate(["good", "bad"] * 10)],
                           [Example("a good film", LABELS[0])], LABELS)
    assert english["note"].startswith("word 1-2 grams")
