import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunecraft.config import build_config
from tunecraft.data import LabelMap, load_classification_data
from tunecraft.data.bundled import read_bundled
from tunecraft.data.dataset import batch_order, seeded_split
from tunecraft.data.readers import Columns, read_examples
from tunecraft.errors import DataError, TunecraftError

COLS = Columns("text", "label", None)


def data_config(**data):
    return build_config({"data": {"dataset": None, **data}}).data


# -- bad input: each names file, line and field ------------------------------------------------------

def test_missing_column_names_the_column_and_lists_the_present_ones(write):
    path = write("a.csv", "sentence,label\nnice film,pos\n")
    with pytest.raises(DataError) as err:
        read_examples(path, COLS)
    assert str(err.value) == f"{path}, line 1, field 'text': column not found; the columns are: sentence, label"


def test_empty_text_is_an_error_with_its_line(write):
    path = write("a.csv", "text,label\nnice film,pos\n   ,neg\n")
    with pytest.raises(DataError) as err:
        read_examples(path, COLS)
    assert str(err.value) == f"{path}, line 3, field 'text': empty text"


def test_missing_label_is_an_error_with_its_line(write):
    path = write("a.jsonl", '{"text": "ok", "label": "pos"}\n{"text": "fine", "label": ""}\n')
    with pytest.raises(DataError, match=r"a.jsonl, line 2, field 'label': missing label"):
        read_examples(path, COLS)


@pytest.mark.parametrize("cell", ["NaN", "nan", "NA", "null", "None", ""])
def test_a_missing_value_spelled_in_a_label_cell_is_an_error_not_a_class(write, cell):
    path = write("a.csv", f"text,label\nnice film,pos\ndull film,{cell}\nbad film,neg\n")
    with pytest.raises(DataError) as err:
        read_examples(path, COLS)
    assert str(err.value) == (f"{path}, line 3, field 'label': missing label ({cell!r}); set data.missing_labels: "
                              "drop to leave such rows out")


def test_missing_labels_drop_leaves_the_rows_out_and_counts_them(write, caplog):
    path = write("a.csv", "text,label\nnice film,pos\ndull film,NaN\nbad film,neg\nok film,null\nfine,pos\n")
    json_path = write("a.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b", "label": NaN}\n'
                      '{"text": "c", "label": null}\n{"text": "d", "label": "neg"}\n')
    with caplog.at_level("WARNING", logger="tunecraft.data.readers"):
        examples = read_examples(path, Columns("text", "label", None, "drop"))
        from_json = read_examples(json_path, Columns("text", "label", None, "drop"))
    assert [(e.text, e.label, e.line) for e in examples] == [("nice film", "pos", 2), ("bad film", "neg", 4),
                                                             ("fine", "pos", 6)]
    assert [e.label for e in from_json] == ["pos", "neg"]
    assert f"{path}: left out 2 of 5 rows whose label is missing (data.missing_labels: drop)" in caplog.messages
    assert f"{json_path}: left out 2 of 4 rows whose label is missing (data.missing_labels: drop)" in caplog.messages
    data = load_classification_data(data_config(train=path, missing_labels="drop", split={"validation": 0,
                                                                                          "test": 0}))
    assert sorted(e.label for e in data.train) == ["neg", "pos", "pos"] and data.label_map.labels == ["neg", "pos"]
    with pytest.raises(DataError, match="line 3, field 'label': missing label"):
        load_classification_data(data_config(train=path))


@pytest.mark.parametrize("name,header", [("a.csv", "text,label,label"), ("a.tsv", "text\tlabel\tlabel")])
def test_a_column_named_twice_is_an_error_naming_both_positions(write, name, header):
    sep = "," if name.endswith("csv") else "\t"
    path = write(name, f"{header}\nnice film{sep}pos{sep}neg\n")
    with pytest.raises(DataError) as err:
        read_examples(path, COLS)
    assert str(err.value) == (f"{path}, line 1, field 'label': the column name appears twice (columns 2 and 3); "
                              "rename one")


def test_a_json_key_given_twice_is_an_error_in_every_json_reader(write):
    from tunecraft.data.chat import read_sft_file
    from tunecraft.data.ner import read_span_jsonl

    path = write("a.jsonl", '{"text": "ok", "label": "pos"}\n{"text": "fine", "label": "pos", "label": "neg"}\n')
    with pytest.raises(DataError) as err:
        read_examples(path, COLS)
    assert str(err.value) == f"{path}, line 2, field 'label': the key appears twice in one object; remove one"
    ner = write("n.jsonl", '{"text": "Ana flew", "entities": [{"start": 0, "end": 3, "label": "PER", "end": 2}]}\n')
    with pytest.raises(DataError, match=r"n.jsonl, line 1, field 'end': the key appears twice"):
        read_span_jsonl(ner)
    chat = write("c.jsonl", '{"messages": [{"role": "user", "content": "hi"}], "messages": []}\n')
    with pytest.raises(DataError, match=r"c.jsonl, line 1, field 'messages': the key appears twice"):
        read_sft_file(chat)


def test_a_parquet_column_named_twice_is_an_error(tmp_path):
    path = tmp_path / "a.parquet"
    table = pa.Table.from_arrays([pa.array(["nice"]), pa.array(["pos"]), pa.array(["neg"])],
                                 names=["text", "label", "label"])
    pq.write_table(table, path)
    with pytest.raises(DataError) as err:
        read_examples(path, COLS)
    assert str(err.value) == f"{path}, field 'label': the column name appears twice (columns 2 and 3); rename one"


def test_non_utf8_bytes_name_the_line(write):
    path = write("a.csv", b"text,label\nnice film,pos\ncaf\xe9 noir,neg\n")
    with pytest.raises(DataError) as err:
        read_examples(path, COLS)
    assert f"{path}, line 3: not valid UTF-8 (byte 0xe9 at column 4)" in str(err.value)


def test_ragged_csv_row(write):
    path = write("a.csv", "text,label\nnice film,pos\nbad, film,neg\n")
    with pytest.raises(DataError) as err:
        read_examples(path, COLS)
    assert str(err.value) == f"{path}, line 3: the row has 3 fields but the header has 2"


def test_invalid_json_line(write):
    path = write("a.jsonl", '{"text": "ok", "label": 1}\n{"text": "broken", "label": 0\n')
    with pytest.raises(DataError) as err:
        read_examples(path, COLS)
    assert str(err.value).startswith(f"{path}, line 2: invalid JSON: Expecting ',' delimiter")


def test_json_line_that_is_not_an_object(write):
    path = write("a.jsonl", '{"text": "ok", "label": 1}\n["text", 0]\n')
    with pytest.raises(DataError, match="line 2: expected a JSON object, got list"):
        read_examples(path, COLS)


def test_empty_file_and_header_only_file(write):
    with pytest.raises(DataError, match="empty.csv: the file is empty"):
        read_examples(write("empty.csv", ""), COLS)
    with pytest.raises(DataError, match="header.csv: no data rows"):
        read_examples(write("header.csv", "text,label\n"), COLS)


def test_unknown_label_in_eval_data_names_file_line_and_known_labels(write):
    train = write("train.csv", "text,label\ngood,pos\nbad,neg\nfine,pos\nawful,neg\n")
    test = write("test.csv", "text,label\ngreat,pos\nmeh,neutral\n")
    with pytest.raises(DataError) as err:
        load_classification_data(data_config(train=train, test=test, validation=train))
    assert str(err.value) == f"{test}, line 3, field 'label': unknown label 'neutral'; the model knows: neg, pos"


def test_cli_prints_the_message_without_a_traceback(write, tmp_path):
    train = write("train.csv", "text,label\ngood,pos\n\xe9\n")
    train_bytes = b"text,label\ngood,pos\nbad,neg,extra\n"
    (tmp_path / "train.csv").write_bytes(train_bytes)
    recipe = write("r.yaml", f"name: bad\noutput_dir: {tmp_path}/runs\ndata:\n  dataset: null\n  train: {train}\n")
    proc = subprocess.run([sys.executable, "-m", "tunecraft", "train", recipe], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {train}, line 3: the row has 3 fields but the header has 2"
    assert "Traceback" not in proc.stderr


# -- good input -------------------------------------------------------------------------------------

def test_csv_tsv_jsonl_and_parquet_read_the_same_examples(write, tmp_path):
    rows = [{"text": "a fine film", "label": "pos"}, {"text": "dull, \"long\"", "label": "neg"}]
    csv_path = write("d.csv", 'text,label\na fine film,pos\n"dull, ""long""",neg\n')
    tsv_path = write("d.tsv", 'text\tlabel\na fine film\tpos\n"dull, ""long"""\tneg\n')
    jsonl_path = write("d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for path in (csv_path, tsv_path, jsonl_path, str(tmp_path / "d.parquet")):
        got = [(e.text, e.label) for e in read_examples(path, COLS)]
        assert got == [("a fine film", "pos"), ('dull, "long"', "neg")], path


def test_parquet_errors_say_row(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"text": "ok", "label": 1}, {"text": "", "label": 0}]),
                   tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"d.parquet, row 2, field 'text': empty text"):
        read_examples(tmp_path / "d.parquet", COLS)


def test_sentence_pairs_and_multiclass_integer_labels(write):
    lines = [{"premise": f"p{i}", "hypothesis": f"h{i}", "y": i % 3} for i in range(30)]
    path = write("nli.jsonl", "\n".join(json.dumps(r) for r in lines))
    data = load_classification_data(data_config(train=path, text_column="premise", text_pair_column="hypothesis",
                                                 label_column="y"))
    assert data.label_map.labels == ["0", "1", "2"]
    assert len(data.train) == 24 and len(data.validation) == 3 and len(data.test) == 3
    assert data.train[0].text_pair.startswith("h")


def test_integer_labels_sort_numerically_and_strings_alphabetically():
    from tunecraft.data.readers import Example

    assert LabelMap.from_examples([Example("a", str(i)) for i in (10, 2, 1)]).labels == ["1", "2", "10"]
    assert LabelMap.from_examples([Example("a", s) for s in ("pos", "neg")]).labels == ["neg", "pos"]
    with pytest.raises(TunecraftError, match="at least 2"):
        LabelMap.from_examples([Example("a", "pos")])


# -- bundled sets, splits and batching ----------------------------------------------------------------

def test_bundled_movie_reviews_are_binary_at_half_a_point():
    mr = read_bundled("mr")
    assert len(mr) == 10_043
    counts = {label: sum(e.label == label for e in mr) for label in ("negative", "positive")}
    assert counts == {"negative": 5_061, "positive": 4_982}
    for name, size in (("tweets", 3_362), ("amazon", 2_943), ("nyt", 2_788)):
        assert len(read_bundled(name)) == size


def test_bundled_split_is_fixed_by_seed_and_disjoint():
    cfg = build_config({"data": {"dataset": "mr"}}).data
    a, b = load_classification_data(cfg), load_classification_data(cfg)
    assert [e.text for e in a.test] == [e.text for e in b.test]
    assert (len(a.train), len(a.validation), len(a.test)) == (8_035, 1_004, 1_004)
    lines = [{e.line for e in part} for part in (a.train, a.validation, a.test)]
    assert not (lines[0] & lines[1]) and not (lines[0] & lines[2]) and not (lines[1] & lines[2])
    other = load_classification_data(build_config({"data": {"dataset": "mr", "split": {"seed": 7}}}).data)
    assert [e.text for e in other.test] != [e.text for e in a.test]


def test_bundled_chinese_reviews_drop_repeats_and_texts_with_both_labels():
    reviews = read_bundled("zh-reviews")
    counts = {label: sum(e.label == label for e in reviews) for label in ("negative", "positive")}
    assert counts == {"negative": 9_031, "positive": 8_332}
    by_text = {}
    for e in reviews:
        assert e.text == e.text.strip() and e.text
        assert by_text.setdefault(e.text, e.label) == e.label
    assert len(by_text) == len(reviews)  # no repeats, so no text sits on both sides of a split
    first = reviews[0]
    assert first.path.endswith("neg.txt") and first.line == 1  # file and line travel with each example
    data = load_classification_data(build_config({"data": {"dataset": "zh-reviews"}}).data)
    assert (len(data.train), len(data.validation), len(data.test)) == (13_891, 1_736, 1_736)
    assert data.label_map.labels == ["negative", "positive"]


def test_seeded_split_covers_everything_once():
    items = list(range(101))
    test, val, train = seeded_split(items, [0.1, 0.1], seed=3)
    assert sorted(test + val + train) == items and len(test) == len(val) == 10


def test_length_grouped_batches_cover_each_index_once_and_cut_padding():
    import random

    lengths = [random.Random(i).randint(5, 120) for i in range(2_000)]
    batches = batch_order(lengths, 32, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(2_000))
    assert batch_order(lengths, 32, seed=1, epoch=0) == batches
    assert batch_order(lengths, 32, seed=1, epoch=1) != batches

    def padding(bs):
        return sum(max(lengths[i] for i in b) * len(b) for b in bs) / sum(lengths) - 1

    plain = batch_order(lengths, 32, seed=1, epoch=0, group_by_length=False)
    assert padding(batches) < 0.1 < padding(plain)


def test_bad_data_loses_nothing_already_written(write, tmp_path):
    from tunecraft.train import train

    train_csv = write("train.csv", "text,label\ngood,pos\nbad,neg,extra\n")
    config = build_config({"name": "kept", "output_dir": str(tmp_path / "runs"),
                           "data": {"dataset": None, "train": train_csv}})
    config.run_dir.mkdir(parents=True)
    (config.run_dir / "report.md").write_text("an earlier run")
    with pytest.raises(DataError, match="line 3"):
        train(config, overwrite=True)
    assert (config.run_dir / "report.md").read_text() == "an earlier run"


def test_eval_on_the_runs_own_dataset_uses_the_runs_split(tmp_path):
    from tunecraft.config import dump_config
    from tunecraft.data.dataset import load_eval_examples
    from tunecraft.evaluate.runs import _split_settings

    config = build_config({"data": {"dataset": "mr", "split": {"seed": 7, "validation": 0.2, "test": 0.05}}})
    (tmp_path / "config.yaml").write_text(dump_config(config))
    seed, fractions = _split_settings(tmp_path)
    held_out = load_eval_examples("mr", COLS, split="test", seed=seed, fractions=fractions)
    assert [e.text for e in held_out] == [e.text for e in load_classification_data(config.data).test]
    assert len(held_out) == 502


# -- data as users bring it: JSON arrays, Alpaca system/history, ShareGPT system ---------------------------

def test_a_json_array_file_reads_like_json_lines_in_every_json_reader(write):
    from tunecraft.data.chat import read_sft_file

    path = write("a.json", '[\n  {"text": "nice film", "label": "pos"},\n  {"text": "dull", "label": "neg"}\n]\n')
    assert [(e.text, e.label, e.line) for e in read_examples(path, COLS)] == [("nice film", "pos", 2),
                                                                               ("dull", "neg", 3)]
    alpaca = write("alpaca_data.json", json.dumps([{"instruction": "Say hi", "input": "", "output": "hi"}],
                                                  indent=2))
    assert read_sft_file(alpaca)[0].messages == [{"role": "user", "content": "Say hi"},
                                                 {"role": "assistant", "content": "hi"}]


@pytest.mark.parametrize(("content", "message"), [
    ('[\n {"text": "ok", "label": "pos"},\n {"text": "bad", "label": }\n]', "line 3: invalid JSON: Expecting value"),
    ('[\n {"text": "ok", "label": "pos"}\n {"text": "bad", "label": "neg"}\n]',
     "line 3: invalid JSON: expected ',' or ']' between elements, got '{'"),
    ('[\n {"text": "ok", "label": "pos"},\n', "line 3: invalid JSON: the array is not closed with ']'"),
    ('[\n {"text": "ok", "label": "pos"}\n]\n{"x": 1}', "line 3: invalid JSON: extra data after the array's ']'"),
])
def test_a_bad_json_array_names_file_and_line(write, content, message):
    path = write("bad.json", content)
    with pytest.raises(DataError) as err:
        read_examples(path, COLS)
    assert str(err.value).startswith(f"{path}, {message}")


def test_alpaca_system_and_history_and_sharegpt_system_are_kept(write):
    from tunecraft.data.chat import read_sft_file

    row = {"system": "Be brief.", "history": [["Hi", "Hello!"]], "instruction": "Add", "input": "2+2",
           "output": "4"}
    share = {"system": "Be kind.", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}
    path = write("sft.jsonl", json.dumps(row) + "\n" + json.dumps(share) + "\n")
    alpaca, sharegpt = read_sft_file(path)
    assert alpaca.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Add\n\n2+2"},
                               {"role": "assistant", "content": "4"}]
    assert sharegpt.messages == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                                 {"role": "assistant", "content": "Yo"}]
    bad = write("h.jsonl", json.dumps({**row, "history": [["only one"]]}) + "\n")
    with pytest.raises(DataError, match=r"h.jsonl, line 1, field 'history\[0\]': expected a pair"):
        read_sft_file(bad)


def test_a_users_file_is_split_stratified_by_label_and_a_rare_label_reaches_the_test_split(write):
    """50 rows of `common` and 10 of `rare`: a stratified 10%/10% split holds one rare row in validation and test
    each for every seed (one permutation of the whole file leaves it out of validation for seeds 1, 2 and 3),
    keeps every row once, and is fixed by the seed; `data.split.stratify: false` gives the plain permutation, and
    the bundled sets are untouched."""
    rows = "".join(f"text number {i},{'rare' if i % 6 == 0 else 'common'}\n" for i in range(60))
    path = write("imbalanced.csv", "text,label\n" + rows)
    data = load_classification_data(data_config(train=path))
    assert [sum(e.label == "rare" for e in part) for part in (data.train, data.validation, data.test)] == [8, 1, 1]
    assert [len(p) for p in (data.train, data.validation, data.test)] == [48, 6, 6]
    for seed in (1, 2, 3):
        other = load_classification_data(data_config(train=path, split={"seed": seed}))
        assert [sum(e.label == "rare" for e in p) for p in (other.train, other.validation, other.test)] == [8, 1, 1]
    every = sorted(e.text for part in (data.train, data.validation, data.test) for e in part)
    assert every == sorted(f"text number {i}" for i in range(60))
    again = load_classification_data(data_config(train=path))
    assert [e.text for e in again.test] == [e.text for e in data.test]
    plain = load_classification_data(data_config(train=path, split={"stratify": False}))
    assert [e.text for e in plain.test] == [e.text for e in seeded_split(read_examples(path, COLS), [0.1, 0.1], 42)[1]]
    mr = load_classification_data(build_config({"data": {"dataset": "mr"}}).data)
    assert (len(mr.train), len(mr.validation), len(mr.test)) == (8_035, 1_004, 1_004)
