"""`data.columns` maps a user's field names for every task (#36 item 6): a file with its own names reads exactly as
the same file with tunecraft's names; a mapped name no row has, or a row holding both names, is an error naming
file, line and field; the mapping is recorded in the run's meta, so `tunecraft eval` (task.read_file) reads
another file of the same shape."""

import json

import pytest

from tunecraft.config import build_config
from tunecraft.data.chat import read_sft_file
from tunecraft.data.dataset import LabelMap, load_classification_data
from tunecraft.data.ner import read_ner_file
from tunecraft.data.preferences import read_preference_file, read_prompt_file
from tunecraft.errors import DataError
from tunecraft.tasks import build_task
from tunecraft.train.job import model_meta

ALPACA = [{"instruction": "Name a colour.", "input": "", "output": "Blue.", "system": "Be brief."},
          {"instruction": "Add these.", "input": "2 and 3", "output": "5",
           "history": [["Hi", "Hello!"]]}]
THEIR_NAMES = {"instruction": "question", "input": "context", "output": "answer", "system": "persona",
               "history": "earlier"}


def jsonl(write, name, rows):
    return write(name, "".join(json.dumps(r) + "\n" for r in rows))


def renamed(row: dict, names: dict) -> dict:
    return {names.get(k, k): v for k, v in row.items()}


def test_alpaca_with_the_users_names_reads_as_alpaca(write):
    ours = read_sft_file(jsonl(write, "ours.jsonl", ALPACA))
    theirs = read_sft_file(jsonl(write, "theirs.jsonl", [renamed(r, THEIR_NAMES) for r in ALPACA]),
                           columns=THEIR_NAMES)
    assert [c.messages for c in theirs] == [c.messages for c in ours]
    assert theirs[0].messages[0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in theirs[1].messages[:2]] == ["Hi", "Hello!"]  # history honoured under its new name


def test_preference_pairs_prompts_and_spans_with_the_users_names(write):
    pair = {"prompt": "Say hi", "chosen": "Hi!", "rejected": "Go away."}
    names = {"prompt": "query", "chosen": "preferred", "rejected": "dispreferred"}
    ours = read_preference_file(jsonl(write, "p.jsonl", [pair]))
    theirs = read_preference_file(jsonl(write, "q.jsonl", [renamed(pair, names)]), columns=names)
    assert theirs[0].chosen == ours[0].chosen == "Hi!" and theirs[0].rejected == ours[0].rejected
    prompts = read_prompt_file(jsonl(write, "r.jsonl", [{"question": "2+2?", "gold": "4"}]),
                               columns={"prompt": "question", "answer": "gold"})
    assert prompts[0].answer == "4"
    spans = {"sentence": "Ann met Bob", "ents": [{"start": 0, "end": 3, "label": "PER"}]}
    sentences = read_ner_file(jsonl(write, "s.jsonl", [spans]), columns={"text": "sentence", "entities": "ents"})
    assert sentences[0].tags[:2] == ["B-PER", "O"]


def test_a_mapped_name_no_row_has_is_an_error_naming_it(write):
    path = jsonl(write, "theirs.jsonl", [renamed(r, THEIR_NAMES) for r in ALPACA])
    with pytest.raises(DataError) as err:
        read_sft_file(path, columns={**THEIR_NAMES, "output": "anwser"})  # a typo in the user's name
    assert err.value.path == path and err.value.field == "anwser" and "output" in err.value.problem


def test_a_row_with_both_names_is_an_error_naming_line_and_field(write):
    rows = [renamed(ALPACA[0], THEIR_NAMES), {**renamed(ALPACA[1], THEIR_NAMES), "output": "5"}]
    with pytest.raises(DataError) as err:
        read_sft_file(jsonl(write, "both.jsonl", rows), columns=THEIR_NAMES)
    assert (err.value.line, err.value.field) == (2, "output") and "answer" in err.value.problem


def test_classification_columns_are_its_column_names(write):
    path = write("reviews.csv", "review,stars\n" + "".join(f"{'good great fine' if i % 2 else 'bad awful'} {i},"
                                                          f"{'pos' if i % 2 else 'neg'}\n" for i in range(40)))
    config = build_config({"data": {"train": path, "columns": {"text": "review", "label": "stars"}}})
    assert (config.data.text_column, config.data.label_column) == ("review", "stars")
    data = load_classification_data(config.data)
    assert sorted(data.label_map.labels) == ["neg", "pos"] and len(data.train) + len(data.validation) + len(
        data.test) == 40
    with pytest.raises(Exception, match="data.columns.text .* and data.text_column"):
        build_config({"data": {"train": path, "text_column": "body", "columns": {"text": "review"}}})
    with pytest.raises(Exception, match="two fields map to one column"):
        build_config({"data": {"train": path, "columns": {"text": "review", "label": "review"}}})


def test_the_run_records_the_mapping_and_eval_reads_with_it(write):
    path = jsonl(write, "theirs.jsonl", [renamed(r, THEIR_NAMES) for r in ALPACA])
    config = build_config({"task": {"name": "causal_lm"}, "model": {"base": "smollm2-135m"},
                           "data": {"train": path, "columns": THEIR_NAMES}})
    task = build_task(config.task)
    meta = json.loads(json.dumps(model_meta(config, task, LabelMap([]), task.load_data(config.data).columns)))
    assert meta["columns"] == THEIR_NAMES
    again = task.read_file(path, meta, "auto")  # what `tunecraft eval RUN --data theirs.jsonl` reads
    assert [c.messages for c in again] == [c.messages for c in read_sft_file(jsonl(write, "o.jsonl", ALPACA))]
