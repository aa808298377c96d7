"""runtime/inference.rows_in_input_order: the batched, length-sorted, optionally sharded scoring loop that
CausalLM.infer and preference's score_rows share; its rows come back in input order, each exactly once."""

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from tunecraft.data.dataset import IGNORE, Encoded, collate
from tunecraft.runtime.inference import rows_in_input_order
from tunecraft.tasks.causal_lm import CausalLM

CPU = torch.device("cpu")
IDS = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], [11], [12, 13, 14, 15]]


def _enc() -> Encoded:
    return Encoded([list(x) for x in IDS], None, [list(x) for x in IDS], 0)


def _first_and_length(batch):
    return torch.stack([batch["input_ids"][:, 0], batch["attention_mask"].sum(1)], 1).float()


def _rows(**kw):
    return rows_in_input_order(_enc(), 2, CPU, lambda e, idx, m: collate(e, idx, 0, m), _first_and_length, 2, **kw)


def test_rows_come_back_in_input_order():
    assert _rows().tolist() == [[float(x[0]), float(len(x))] for x in IDS]


def test_two_shards_gathered_give_every_row_once_in_order():
    other = []  # rank 1's (index, row) pairs, as gather_object would hand them to rank 0
    _rows(rank=1, world=2, gather=lambda rows: other.extend(rows) or rows)
    mine = []
    joined = _rows(rank=0, world=2, gather=lambda rows: mine.extend(rows) or rows + other)
    assert sorted(i for i, _ in mine + other) == list(range(len(IDS))) and mine and other
    assert joined.tolist() == _rows().tolist()


def test_no_features_give_an_empty_table_of_the_width():
    empty = Encoded([], None, [], 0)
    assert rows_in_input_order(empty, 2, CPU, collate, _first_and_length, 3).shape == (0, 3)


def test_causal_lm_infer_is_each_example_scored_alone():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16))
    got = CausalLM().infer(model, _enc(), 2, 0, CPU)
    want = []
    for ids in IDS:
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(input_ids=x).logits[:, :-1].float()
        target = x[:, 1:]
        nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none").sum()
        want.append([float(nll), float(len(ids) - 1)])
    assert torch.allclose(got, torch.tensor(want), atol=1e-5)
