import json
import logging
import random

import pytest
import torch
from seqeval.metrics import f1_score

from tunecraft.config import build_config
from tunecraft.data import LabelMap
from tunecraft.data.dataset import IGNORE
from tunecraft.data.ner import (
    Sentence,
    normalise,
    read_conll,
    read_people_daily,
    read_span_jsonl,
    spans_to_tags,
    split_words,
    tags_to_spans,
)
from tunecraft.errors import DataError, TunecraftError
from tunecraft.evaluate.runs import evaluate_run, predict
from tunecraft.experiment import experiment
from tunecraft.metrics.labels import entity_metrics
from tunecraft.models import load_tokenizer, resolve_base
from tunecraft.tasks import build_task
from tunecraft.tasks import token_classification as ner
from tunecraft.train import train

from .ner_data import write_english_ner

META = {"max_length": 128, "ner": build_config({"task": "token_classification"}).task.model_dump(exclude={"name"})}
TASK = build_task("token_classification")


def ner_config(tmp, name, train_file, test_file=None, **sections):
    raw = {"name": name, "output_dir": str(tmp), "seed": 7, "task": "token_classification",
           "data": {"dataset": None, "train": train_file, "test": test_file, "split": {"validation": 0.1}},
           "train": {"epochs": 3, "batch_size": 16, "lr": 1e-4, "progress": False, "tensorboard": False}}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return build_config(raw)


# -- readers and tag schemes ---------------------------------------------------------------------------------

def test_conll_reader_breaks_sentences_at_blank_and_docstart_lines(write):
    path = write("a.conll", "-DOCSTART- -X- O\n\nJohn NNP B-PER\nlives VBZ O\n\nin IN O\n-DOCSTART- -X- O\n"
                            "Paris NNP B-LOC\n")
    sentences = read_conll(path)
    assert [s.tokens for s in sentences] == [["John", "lives"], ["in"], ["Paris"]]
    assert [s.tags for s in sentences] == [["B-PER", "O"], ["O"], ["B-LOC"]]
    assert [s.line for s in sentences] == [3, 6, 8]


def test_conll_reader_tag_column_is_configurable(write):
    path = write("a.tsv", "John\tB-PER\tNNP\nruns\tO\tVBZ\n")
    assert read_conll(path, tag_column=1)[0].tags == ["B-PER", "O"]
    with pytest.raises(DataError, match=r"a.tsv, line 1, field 'tag': invalid tag 'NNP'"):
        read_conll(path)
    with pytest.raises(DataError, match="column 5 does not exist; the line has 3 column"):
        read_conll(path, tag_column=5)


def test_conll_reader_ignores_extra_columns_of_varying_width(write):
    # MeCab-style output: a feature column whose width differs from line to line; token first, tag last
    path = write("mecab.conll", "東京\t名詞,固有名詞,地域,一般\t*\t*\tB-LOC\n"
                 "に\t助詞,格助詞,一般,*,*,*,に,ニ,ニ\t*\t*\t*\tO\n\n"
                 "花子\t名詞\tB-PER\n")
    sentences = read_conll(path)
    assert [(s.tokens, s.tags) for s in sentences] == [(["東京", "に"], ["B-LOC", "O"]), (["花子"], ["B-PER"])]


def test_conll_reader_keeps_an_ideographic_space_token_and_its_tag(write):
    path = write("ws.conll", "山田\tB-PER\n\u3000\tO\n太郎\tB-PER\n")
    sentence = read_conll(path)[0]
    assert sentence.tokens == ["山田", "\u3000", "太郎"]
    assert sentence.tags == ["B-PER", "O", "B-PER"]


def test_conll_line_with_wrong_column_count_names_file_and_line(write):
    path = write("bad.conll", "John B-PER\nlives O\nin\nParis B-LOC\n")
    with pytest.raises(DataError, match=r"bad.conll, line 3.*expected a token and a tag, found 1 column"):
        read_conll(path)


def test_bio_bioes_round_trip_and_invalid_continuations():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-ORG", "I-ORG", "I-ORG"]
    spans, invalid = tags_to_spans(tags)
    assert [(s.start, s.end, s.type) for s in spans] == [(0, 2, "PER"), (3, 4, "LOC"), (4, 7, "ORG")]
    assert not invalid
    bioes = spans_to_tags(len(tags), spans, "bioes")
    assert bioes == ["B-PER", "E-PER", "O", "S-LOC", "B-ORG", "I-ORG", "E-ORG"]
    assert spans_to_tags(len(tags), tags_to_spans(bioes)[0], "bio") == tags
    spans, invalid = tags_to_spans(["O", "I-PER", "I-PER", "B-LOC", "I-ORG"])
    assert invalid == [1, 4]
    assert [(s.start, s.end, s.type) for s in spans] == [(1, 3, "PER"), (3, 4, "LOC"), (4, 5, "ORG")]


def test_an_i_tag_without_an_entity_is_repaired_or_refused(write, caplog):
    path = write("i.conll", "The O\nnew O\nBerlin I-LOC\noffice O\n")
    with caplog.at_level(logging.WARNING):
        repaired = normalise(read_conll(path)[0], "bio", "repair")
    assert repaired.tags == ["O", "O", "B-LOC", "O"]
    assert "i.conll:3" in caplog.text and "repaired" in caplog.text
    with pytest.raises(DataError, match=r"i.conll, line 3, field 'tag'.*'I-LOC' of token 3 \('Berlin'\)"):
        normalise(read_conll(path)[0], "bio", "error")


def test_span_jsonl_becomes_word_tags_and_bad_spans_are_refused(write):
    path = write("s.jsonl", json.dumps({"text": "Ana Lima flew to New York.", "entities": [
        {"start": 0, "end": 8, "label": "PER"}, {"start": 17, "end": 25, "label": "LOC"}]}) + "\n"
        + json.dumps({"text": "江泽民在北京", "entities": [{"start": 4, "end": 6, "label": "LOC"}]}) + "\n")
    a, b = read_span_jsonl(path)
    assert a.tokens == ["Ana", "Lima", "flew", "to", "New", "York", "."]
    assert a.tags == ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"]
    assert b.tokens == list("江泽民在北京") and b.tags == ["O", "O", "O", "O", "B-LOC", "I-LOC"]
    assert ner.spans_with_offsets(a, a.tags) == [{"type": "PER", "start": 0, "end": 8, "text": "Ana Lima"},
                                                 {"type": "LOC", "start": 17, "end": 25, "text": "New York"}]
    cut = write("cut.jsonl", json.dumps({"text": "Ana Lima", "entities": [{"start": 0, "end": 6, "label": "PER"}]}))
    with pytest.raises(DataError, match=r"cut.jsonl, line 1, field 'entities\[0\]'.*'Ana Li' does not start and end"):
        read_span_jsonl(cut)
    overlap = write("o.jsonl", json.dumps({"text": "New York City", "entities": [
        {"start": 0, "end": 8, "label": "LOC"}, {"start": 4, "end": 13, "label": "LOC"}]}))
    with pytest.raises(DataError, match="o.jsonl, line 1.*entities overlap"):
        read_span_jsonl(overlap)
    empty = write("e.jsonl", '{"text": "  ", "entities": []}\n')
    with pytest.raises(DataError, match="e.jsonl, line 1, field 'text': empty sentence"):
        read_span_jsonl(empty)


def test_people_daily_conversion_and_fixed_split():
    sentences = read_people_daily()
    second = sentences[1]  # 中共中央/nt  总书记/n  、/w  国家/n  主席/n  江/nr  泽民/nr
    assert second.text == "中共中央总书记、国家主席江泽民"
    assert ner.spans_with_offsets(second, second.tags) == [
        {"type": "ORG", "start": 0, "end": 4, "text": "中共中央"},
        {"type": "PER", "start": 12, "end": 15, "text": "江泽民"}]
    assert len(sentences) == 18994  # 19,484 lines less blank ones and repeated texts
    split = ner.bundled_split("pd-ner", 42, (0.1, 0.1))
    assert [len(split[s]) for s in ("train", "validation", "test")] == [15196, 1899, 1899]
    texts = {s: {x.text for x in part} for s, part in split.items()}
    assert not texts["train"] & texts["test"] and not texts["validation"] & texts["test"]
    assert ner.entity_counts(split["test"]) == ner.entity_counts(ner.bundled_split("pd-ner", 42, (0.1, 0.1))["test"])


def test_unknown_tag_at_eval_time_names_file_and_line(write, tmp_path):
    train_file = write("train.conll", "Ana B-PER\nruns O\n\nin O\nLima B-LOC\n")
    test_file = write("test.conll", "Ana B-PER\n\nat O\nAcme B-ORG\n")
    config = ner_config(tmp_path, "x", train_file, test_file, data={"split": {"validation": 0.0}})
    with pytest.raises(DataError, match=r"test.conll, line 4, field 'tag': unknown tag 'B-ORG'"):
        build_task(config.task).load_data(config.data)


# -- alignment, windows, metrics -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_base("minilm-l6"))


def test_labels_sit_on_the_first_sub_token_only(tokenizer):
    sentence = normalise(Sentence(["Tokenization", "works", "in", "Reykjavik"], ["O", "O", "O", "B-LOC"]), "bio",
                         "error")
    label_map = LabelMap(["O", "B-LOC", "I-LOC"])
    enc = TASK.encode(tokenizer, [sentence], META, label_map)
    words, labels = enc.word_ids[0], enc.labels[0]
    firsts = [i for i, w in enumerate(words) if w is not None and (i == 0 or words[i - 1] != w)]
    assert [labels[i] for i in firsts] == [0, 0, 0, 1]
    assert all(lab == IGNORE for i, lab in enumerate(labels) if i not in firsts)
    assert len(words) > 6  # the long words were split into several sub-tokens
    every = TASK.encode(tokenizer, [sentence], {**META, "ner": {**META["ner"], "label_subtokens": "all"}},
                            label_map)
    assert IGNORE not in [lab for lab, w in zip(every.labels[0], every.word_ids[0]) if w is not None]


def test_long_sentences_become_overlapping_windows_and_merge_back(tokenizer):
    words = [f"w{i}" for i in range(150)]
    meta = {"max_length": 32, "ner": {**META["ner"], "stride": 8}}
    enc = TASK.encode(tokenizer, [Sentence(words), Sentence(["short"])], meta)
    assert max(len(ids) for ids in enc.input_ids) <= 32
    assert enc.sample.count(0) > 5 and enc.sample.count(1) == 1
    # logits that say "I am word w" in column w: merging must give every word its own row
    logits = [torch.tensor([[float(w == c) if w is not None else -1.0 for c in range(150)] for w in ws])
              for ws in enc.word_ids]
    merged = ner.word_logits(logits, enc, [150, 1])
    assert merged[0].argmax(dim=-1).tolist() == list(range(150))


def test_entity_metrics_match_seqeval_and_count_type_confusions():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O", "O"]]
    m = entity_metrics(gold, pred)
    assert m["f1"] == pytest.approx(f1_score(gold, pred))
    assert m["per_type"]["PER"]["f1"] == 1.0 and m["per_type"]["LOC"]["recall"] == 0.0
    assert m["token_accuracy"] == pytest.approx(4 / 7)
    names, matrix = m["confusion_types"], m["confusion_matrix"]
    cell = {(names[i], names[j]): v for i, row in enumerate(matrix) for j, v in enumerate(row) if v}
    assert cell == {("PER", "PER"): 1, ("LOC", "ORG"): 1, ("ORG", "ORG"): 1, ("LOC", "none"): 1}
    strict = entity_metrics(gold, pred, strict=True)
    assert strict["f1"] < m["f1"]  # strict mode does not accept the I-ORG that starts an entity


# -- training, evaluation and prediction on real models ----------------------------------------------------------

@pytest.fixture(scope="module")
def english_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ner")
    train_file, test_file = write_english_ner(folder)
    config = ner_config(folder / "runs", "en", train_file, test_file)
    return config, experiment(config)


@pytest.mark.slow
def test_english_ner_beats_the_lexicon_baseline_on_unseen_names(english_run):
    config, summary = english_run
    m = summary["metrics"]
    # the training-free baseline every NER report carries: entity strings of the training split, tagged
    # wherever they occur; it scores 0 here, since every held-out name is new
    (lexicon,) = [b for b in summary["baselines"] if b["name"].startswith("lexicon")]
    baseline = lexicon["metrics"]["f1"]
    assert m["f1"] >= 0.6 and m["f1"] >= baseline + 0.4, (m["f1"], baseline)
    assert set(m["per_type"]) == {"PER", "LOC", "ORG"}
    report = (config.run_dir / "report.md").read_text(encoding="utf-8")
    for kind in ("PER", "LOC", "ORG"):
        assert f"| {kind} |" in report
    assert "lexicon (training entity strings, longest match)" in report
    assert (config.run_dir / "plots" / "confusion.png").is_file()
    again = evaluate_run(config.run_dir, config.data.test)
    assert again["metrics"]["f1"] == pytest.approx(m["f1"], abs=1e-6)


@pytest.mark.slow
def test_predicted_spans_on_text_match_the_tags_predicted_on_its_tokens(english_run):
    config, _ = english_run
    texts = ["Yesterday Grace Okafor met Ali Yilmaz at the Crescent Pharma headquarters.",
             "Flights from Havana to Bogota were cancelled on Friday."]
    rows = predict(config.run_dir, texts)
    assert any(e["type"] == "PER" and e["text"] == "Grace Okafor" for e in rows[0]["entities"])
    from tunecraft.trained import load_trained

    trained = load_trained(config.run_dir)
    for text, row in zip(texts, rows):
        tokens, _ = split_words(text)
        by_tokens = TASK.predict(trained, [{"tokens": tokens}], 8, None)[0]
        assert by_tokens["tags"] == row["tags"]
        for e in row["entities"]:
            assert text[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1
        assert [(e["type"], e["text"]) for e in row["entities"]] == \
            [(e["type"], e["text"]) for e in by_tokens["entities"]]


@pytest.mark.slow
def test_a_sentence_longer_than_the_window_is_tagged_to_its_end(english_run):
    config, _ = english_run
    text = " ".join(["Police said the weather was fine and the streets were quiet ."] * 24
                    + ["Yesterday Grace Okafor met Ali Yilmaz at the Crescent Pharma headquarters ."])
    tokens, _ = split_words(text)
    assert len(tokens) > 2 * config.model.max_length
    row = predict(config.run_dir, [text])[0]
    assert len(row["tags"]) == len(tokens)
    assert ("PER", "Grace Okafor") in [(e["type"], e["text"]) for e in row["entities"]]


@pytest.mark.slow
def test_chinese_character_model_trains_from_scratch_on_people_daily(tmp_path):
    config = build_config({
        "name": "pd", "output_dir": str(tmp_path), "seed": 7, "task": "token_classification",
        "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": 64},
        "data": {"dataset": "pd-ner", "max_train_samples": 1500, "max_eval_samples": 300},
        "train": {"epochs": 4, "batch_size": 32, "lr": 2e-3, "progress": False, "tensorboard": False}})
    summary = train(config)
    m = summary["metrics"]
    assert summary["eval_split"] == "test" and m["samples"] == 300
    assert summary["features"]["train"] > 1500  # long lines became several windows
    evals = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in evals if e["type"] == "eval"]
    assert losses[-1] < losses[0]
    # chance: tags drawn at the training data's tag frequencies
    data = build_task(config.task).load_data(config.data)
    tags = [t for s in data.train for t in s.tags]
    rng = random.Random(0)
    chance = f1_score([s.tags for s in data.test], [rng.choices(tags, k=len(s.tags)) for s in data.test])
    assert m["f1"] > chance + 0.1, (m["f1"], chance)
    rows = predict(config.run_dir, ["江泽民在北京会见了联合国秘书长。"])
    assert rows[0]["tokens"] == list("江泽民在北京会见了联合国秘书长。")


def test_scratch_models_need_a_known_size_and_a_tokenizer(tmp_path):
    bad = build_config({"task": "token_classification", "data": {"dataset": "pd-ner"},
                        "model": {"base": "scratch:encoder-huge", "tokenizer": "chars"}, "output_dir": str(tmp_path)})
    with pytest.raises(TunecraftError, match="unknown size 'encoder-huge'"):
        train(bad)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cli_eval_and_predict_on_an_ner_run(english_run):
    import subprocess
    import sys

    config, summary = english_run
    run = str(config.run_dir)
    out = subprocess.run([sys.executable, "-m", "tunecraft", "predict", run, "Police said Ali Yilmaz left Havana .",
                          "--json"], capture_output=True, text=True, check=True).stdout
    row = json.loads(out.splitlines()[0])
    assert {(e["type"], e["text"]) for e in row["entities"]} >= {("PER", "Ali Yilmaz")}
    shown = subprocess.run([sys.executable, "-m", "tunecraft", "eval", run, "--data", config.data.test, "--format",
                            "conll"], capture_output=True, text=True, check=True).stdout
    assert f"entity F1 {summary['metrics']['f1']:.4f}" in shown and "per-type" not in shown
    bad = subprocess.run([sys.executable, "-m", "tunecraft", "eval", run, "--data", "nope.conll"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "neither a bundled NER set" in bad.stderr


@pytest.mark.slow
def test_a_served_ner_model_returns_the_entities_predict_returns(english_run):
    import signal

    import httpx

    from .test_serve import start

    config, _ = english_run
    proc, url = start(config.run_dir)
    try:
        assert httpx.get(url + "/health").json()["task"] == "token_classification"
        texts = ["Yesterday Grace Okafor met Ali Yilmaz at the Crescent Pharma headquarters.", "Nothing here."]
        answer = httpx.post(url + "/v1/entities", json={"texts": texts}, timeout=30)
        assert answer.status_code == 200
        assert [r["entities"] for r in answer.json()["results"]] == [
            [{**e, "score": pytest.approx(e["score"], abs=1e-4)} for e in row["entities"]]
            for row in predict(config.run_dir, texts)]
        wrong = httpx.post(url + "/v1/classify", json={"texts": ["x"]}, timeout=30)
        assert wrong.status_code == 404 and "/v1/entities" in wrong.json()["detail"]
        empty = httpx.post(url + "/v1/entities", json={"texts": [" ."[:1]]}, timeout=30)
        assert empty.status_code == 422 and "no words" in empty.json()["detail"]
        long_text = " ".join(texts * 20)  # longer than max_length: tagged whole, in overlapping windows
        long = httpx.post(url + "/v1/entities", json={"texts": [long_text]}, timeout=30)
        assert long.status_code == 200
        tags = long.json()["results"][0]["tags"]
        assert len(tags) == len(split_words(long_text)[0]) > config.model.max_length
        assert tags == predict(config.run_dir, [long_text])[0]["tags"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_lexicon_baseline_tags_known_strings_longest_first():
    from tunecraft.evaluate.baselines import lexicon_ner

    train_set = [Sentence(["New", "York", "City", "is", "big"], ["B-LOC", "I-LOC", "I-LOC", "O", "O"]),
                 Sentence(["New", "York", "votes"], ["B-ORG", "I-ORG", "O"]),
                 Sentence(["New", "York", "won"], ["B-ORG", "I-ORG", "O"]),
                 Sentence(["York", "left"], ["B-PER", "O"])]
    test_set = [Sentence(["I", "saw", "New", "York", "City", "and", "York"], ["O", "O", "B-LOC", "I-LOC", "I-LOC", "O",
                                                                          "B-PER"]),
                Sentence(["New", "York", "said"], ["B-ORG", "I-ORG", "O"])]
    result = lexicon_ner(train_set, test_set)
    # the three-word string wins over "New York" inside it; "New York" alone takes its most frequent type
    assert result["entries"] == 3 and result["metrics"]["f1"] == 1.0
    test_set[1].tags = ["B-LOC", "I-LOC", "O"]
    assert lexicon_ner(train_set, test_set)["metrics"]["f1"] == pytest.approx(2 / 3)


@pytest.mark.slow
@pytest.mark.parametrize("method,lr", [({"name": "prompt"}, 3e-2), ({"name": "prefix"}, 1e-2),
                                       ({"name": "adapter"}, 1e-3)], ids=["prompt", "prefix", "adapter"])
def test_parameter_efficient_methods_that_add_positions_or_modules_do_ner(method, lr, tmp_path):
    """prompt adds input positions (dropped again from the logits), prefix adds attention positions, adapter
    adds modules: each learns English NER on unseen names and reloads to the same F1."""
    train_file, test_file = write_english_ner(tmp_path)
    config = ner_config(tmp_path / "runs", method["name"], train_file, test_file, method=method, train={"lr": lr})
    summary = train(config)
    # measured 2026-11-24: prompt 0.65, prefix 0.66, adapter 0.76; the lexicon baseline scores 0 on new names
    assert summary["metrics"]["f1"] >= 0.5, summary["metrics"]
    assert summary["trainable_params"] < 0.04 * summary["total_params"]
    again = evaluate_run(config.run_dir, config.data.test, precision="fp32")
    assert again["metrics"]["f1"] == pytest.approx(summary["metrics"]["f1"], abs=0.02)  # training evaluated in bf16
