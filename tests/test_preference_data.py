"""Preference files (pairs and judged answers, text or messages), their errors, and the completion log-probs
and reference model every alignment objective shares."""

import copy
import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from tests.tiny_decoder import tiny_base
from tunecraft.align.logprobs import completion_logprobs, encode_completions, pad_rows, reference_of
from tunecraft.data.preferences import (
    PreferencePair,
    as_judgements,
    read_preference_file,
    render_completion,
    render_prompt,
)
from tunecraft.errors import DataError


def jsonl(write, name, rows):
    return write(name, "".join(json.dumps(r) + "\n" for r in rows))


def test_pairs_in_every_convention(write):
    path = jsonl(write, "p.jsonl", [
        {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."},
        {"prompt": [{"role": "user", "content": "Say hi"}], "chosen": [{"role": "assistant", "content": "Hi!"}],
         "rejected": [{"role": "assistant", "content": "No."}], "margin": 2},
        {"chosen": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}],
         "rejected": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "No."}]},
    ])
    pairs = read_preference_file(path)
    assert [type(p) for p in pairs] == [PreferencePair] * 3
    assert pairs[0].prompt == "Say hi" and (pairs[0].chosen, pairs[0].rejected) == ("Hi!", "No.")
    assert pairs[1].prompt == pairs[2].prompt == [{"role": "user", "content": "Say hi"}]
    assert (pairs[1].margin, pairs[2].margin) == (2.0, None) and pairs[2].line == 3
    judged = as_judgements(pairs[:1])
    assert [(j.completion, j.desirable) for j in judged] == [("Hi!", True), ("No.", False)]


def test_judgements(write):
    path = jsonl(write, "k.jsonl", [{"prompt": "Q", "completion": "good", "label": True},
                                    {"prompt": "Q", "completion": "bad", "label": False}])
    rows = read_preference_file(path)
    assert [(r.completion, r.desirable) for r in rows] == [("good", True), ("bad", False)]


@pytest.mark.parametrize("row, where", [
    ({"prompt": "Q", "chosen": "a"}, "line 2, field 'rejected': missing"),
    ({"prompt": "Q", "chosen": "same", "rejected": " same "}, "line 2, field 'rejected': the same text as chosen"),
    ({"prompt": "Q", "chosen": "a", "rejected": ""}, "line 2, field 'rejected': is empty"),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, "line 2, field 'prompt': is empty"),
    ({"prompt": "Q", "chosen": "a", "rejected": "b", "margin": "big"}, "line 2, field 'margin': expected a number"),
    ({"prompt": [{"role": "bot", "content": "x"}], "chosen": "a", "rejected": "b"},
     "line 2, field 'prompt[0].role': unknown role 'bot'"),
    ({"prompt": "Q", "completion": "a", "label": True}, "line 2: a row of another kind"),
    ({"chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "x"}],
      "rejected": [{"role": "user", "content": "B"}, {"role": "assistant", "content": "y"}]},
     "line 2, field 'prompt': missing, and chosen and rejected do not share a prompt"),
])
def test_bad_pair_rows_name_line_and_field(write, row, where):
    path = jsonl(write, "bad.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}, row])
    with pytest.raises(DataError) as err:
        read_preference_file(path)
    assert str(err.value).startswith(f"{path}, {where}")


def test_bad_judgement_rows(write):
    for row, where in (({"prompt": "Q", "completion": "", "label": True}, "field 'completion': is empty"),
                       ({"prompt": "Q", "completion": "a", "label": "yes"}, "field 'label': expected true"),
                       ({"prompt": "Q", "label": True}, "field 'completion': missing")):
        path = jsonl(write, "badk.jsonl", [row])
        with pytest.raises(DataError, match=where):
            read_preference_file(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_base(tmp_path_factory.mktemp("tiny"))
    return AutoModelForCausalLM.from_pretrained(str(folder)), AutoTokenizer.from_pretrained(str(folder))


def test_completion_text_closes_the_turn(tiny):
    _, tok = tiny
    prompt = [{"role": "user", "content": "Say hi"}]
    head, answer = render_prompt(tok, prompt), render_completion(tok, prompt, "Hi!")
    assert head.endswith("<|im_start|>assistant\n") and answer.startswith("Hi!<|im_end|>")
    assert render_completion(tok, "Once upon", " a time") == " a time" + tok.eos_token


def test_completion_logprobs_equal_a_hand_sum_and_ignore_padding(tiny):
    model, tok = tiny
    ids, masks, cut = encode_completions(tok, ["Hello there", "A"], [" friend", " much longer answer here"], 64)
    assert cut == 0 and all(sum(m) == len(tok(c, add_special_tokens=False)["input_ids"])
                            for m, c in zip(masks, [" friend", " much longer answer here"]))
    input_ids, mask = pad_rows(ids, tok.pad_token_id), pad_rows(masks, 0)
    attention = pad_rows([[1] * len(r) for r in ids], 0)
    with torch.no_grad():
        logp, count = completion_logprobs(model, input_ids, attention, mask)
        for row in range(2):  # each row alone, unpadded, summed by hand
            alone = torch.tensor([ids[row]])
            lp = torch.log_softmax(model(input_ids=alone).logits[0, :-1].float(), -1)
            hand = sum(lp[t - 1, ids[row][t]] for t in range(1, len(ids[row])) if masks[row][t])
            assert torch.allclose(logp[row], hand, atol=1e-4)
    assert count.tolist() == [float(sum(m)) for m in masks]


def test_long_rows_keep_the_completion_and_count_the_cut(tiny):
    _, tok = tiny
    ids, masks, cut = encode_completions(tok, ["word " * 50], [" the answer"], 16)
    assert cut == 1 and len(ids[0]) == 16 and ids[0][-sum(masks[0]):] == tok(" the answer")["input_ids"]


def test_lora_with_adapter_off_is_the_frozen_base(tiny):
    model, tok = tiny
    frozen = copy.deepcopy(model).eval()
    peft = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                            init_lora_weights=False))
    ids = torch.tensor([tok("Hello there friend")["input_ids"]])
    peft.train()
    with torch.no_grad():
        base = frozen(input_ids=ids).logits
        assert not torch.allclose(peft(input_ids=ids).logits, base)  # the adapter changes the answer ...
        with reference_of(peft) as ref:
            assert torch.equal(ref(input_ids=ids).logits, base)  # ... and off, it is the base exactly
    assert peft.training  # its mode is given back
    with pytest.raises(Exception, match="no adapter to switch off"):
        with reference_of(frozen):
            pass
