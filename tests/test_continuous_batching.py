"""The decode loop behind the OpenAI routes (serve/routes/generation.py), driven step by step in process on the tiny
decoder: a sequence admitted while another decodes gets its tokens before that one ends, and every answer equals
the one it gets alone (greedy and seeded sampling); a cancelled row leaves the others' answers unchanged; rows of
two LoRA runs in one running batch each answer as their own run's `predict` does."""

import asyncio
from types import SimpleNamespace

import pytest
import torch

from tests.tiny_decoder import PROMPTS, decode_alone, decode_sequence, sent_events, tiny_base, tiny_run
from tunecraft import predict
from tunecraft.data.chat import prompt_text
from tunecraft.serve.routes.adapters import load_adapters
from tunecraft.serve.routes.generation import DONE, DecodeLoop, Sequence


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_base(tmp_path_factory.mktemp("cbatch") / "base")


@pytest.fixture(scope="module")
def trained(base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return SimpleNamespace(model=AutoModelForCausalLM.from_pretrained(str(base)).eval(),
                           tokenizer=AutoTokenizer.from_pretrained(str(base)))


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def engine(trained, **kwargs) -> DecodeLoop:
    """A decode loop the test drives on its own thread (admit, step, run)."""
    return DecodeLoop(lambda: trained, None, 8, **kwargs)


def test_a_sequence_admitted_mid_flight_gets_its_tokens_before_the_long_one_ends_and_answers_as_alone(trained, loop):
    events = asyncio.Queue()
    long = decode_sequence(trained, loop, events, "Tell me a long story about the sea.", 40, index=0)
    short = decode_sequence(trained, loop, events, "hello", 5, index=1)
    later = decode_sequence(trained, loop, events, "What is AI?", 8, index=2)
    eng = engine(trained)
    eng.waiting.append(long)
    eng.admit()
    for _ in range(3):
        eng.step()
    eng.waiting.append(short)
    eng.admit()
    eng.step()
    eng.waiting.append(later)
    eng.run()

    order = sent_events(loop, events)
    done_at = {i: order.index((i, DONE)) for i in range(3)}
    first_at = {i: next(k for k, (j, _) in enumerate(order) if j == i) for i in range(3)}
    assert first_at[1] < done_at[0] and first_at[2] < done_at[0]
    assert done_at[1] < done_at[0] and done_at[2] < done_at[0]
    assert long.tokens == 40 and long.finish_reason == "length"  # it ran to the end after the others joined

    # each equals its answer decoded alone, and a plain model.generate of it
    for seq, text, n in ((long, "Tell me a long story about the sea.", 40), (short, "hello", 5),
                         (later, "What is AI?", 8)):
        assert seq.generated == decode_alone(trained, loop, text, n)
        ids = torch.tensor([seq.prompt_ids])
        with torch.no_grad():
            out = trained.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                         pad_token_id=trained.tokenizer.pad_token_id)
        assert seq.generated == out[0, ids.shape[1]:].tolist()
    assert "".join(e for i, e in order if i == 1 and e is not DONE) == short.answer  # the deltas join to the answer


def test_a_seeded_sampled_sequence_answers_the_same_alone_and_batched(trained, loop):
    settings = {"temperature": 1.0, "top_p": 0.9, "seed": 11}
    want = decode_alone(trained, loop, "Tell me a joke.", 12, **settings)
    events = asyncio.Queue()
    eng = engine(trained)
    others = [decode_sequence(trained, loop, events, "What is AI?", 16, index=1, temperature=1.0),
              decode_sequence(trained, loop, events, "hello", 16, index=2)]
    eng.waiting.extend(others)
    eng.admit()
    eng.step()
    seeded = decode_sequence(trained, loop, events, "Tell me a joke.", 12, index=0, **settings)
    eng.waiting.append(seeded)
    eng.run()
    assert seeded.generated == want
    assert decode_alone(trained, loop, "Tell me a joke.", 12, **{**settings, "seed": 12}) != want  # the seed matters


def test_cancelling_one_row_leaves_the_others_answers_unchanged(trained, loop):
    texts = ["What is AI?", "Tell me a joke.", "Who are you?"]
    events = asyncio.Queue()
    seqs = [decode_sequence(trained, loop, events, t, 10, index=i) for i, t in enumerate(texts)]
    eng = engine(trained)
    eng.waiting.extend(seqs)
    eng.admit()
    eng.step()
    seqs[1].cancelled = True
    eng.run()
    assert seqs[1].finish_reason == "cancelled" and seqs[1].tokens == 2
    assert [s.finish_reason for s in (seqs[0], seqs[2])] == ["length", "length"]
    for i in (0, 2):
        assert seqs[i].generated == decode_alone(trained, loop, texts[i], 10)
    assert sum(e is DONE for _, e in sent_events(loop, events)) == 3


def test_rows_of_two_lora_runs_in_one_running_batch_answer_as_their_own_predict(base, loop):
    a = tiny_run(base.parent, base, "a", seed=1, lr=3e-2)
    b = tiny_run(base.parent, base, "b", seed=2, lr=3e-2)
    want = {name: [row["response"] for row in predict(run, PROMPTS, precision="fp32")] for name, run in
            (("a", a), ("b", b))}
    assert want["a"] != want["b"]
    trained, metas = load_adapters({"a": a, "b": b})
    gen = metas["a"]["generation"]
    events = asyncio.Queue()

    def row(name, k, prompt):
        ids = trained.tokenizer(prompt_text(trained.tokenizer, [{"role": "user", "content": prompt}]),
                                add_special_tokens=False)["input_ids"]
        return Sequence(ids, gen["max_new_tokens"], 0.0, 1.0, list(gen["stop"]), True, events, loop, index=k,
                        adapter=name)

    rows = [row(name, k, p) for k, (p, name) in enumerate((p, n) for p in PROMPTS for n in ("a", "b"))]
    eng = DecodeLoop(lambda: trained, None, 16, mixed_adapters=True)
    eng.waiting.extend(rows[:4])
    eng.admit()
    assert len(eng.rows) == 4 and {s.adapter for s in eng.rows} == {"a", "b"}  # one forward, both adapters
    eng.step()
    eng.waiting.extend(rows[4:])  # the rest join mid-flight
    eng.run()
    assert [s.answer for s in rows[0::2]] == want["a"]
    assert [s.answer for s in rows[1::2]] == want["b"]


def test_prompts_sharing_a_chat_template_head_reuse_its_cache_and_answer_as_alone(trained, loop):
    tokenizer = trained.tokenizer
    prompts = [tokenizer(prompt_text(tokenizer, [{"role": "user", "content": p}]), add_special_tokens=False)[
        "input_ids"] for p in PROMPTS]
    events = asyncio.Queue()
    seqs = [Sequence(ids, 6, 0.0, 1.0, [], False, events, loop, index=i) for i, ids in enumerate(prompts)]
    eng = engine(trained)
    for seq in seqs:  # one joins per step: the second and later prefill only what follows the shared head
        eng.waiting.append(seq)
        eng.admit()
        eng.step()
    eng.run()
    head = eng.prefixes[None].tokens
    assert len(head) >= 16 and all(ids[: len(head)] == head for ids in prompts)
    for seq in seqs:
        ids = torch.tensor([seq.prompt_ids])
        with torch.no_grad():
            out = trained.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                         pad_token_id=tokenizer.pad_token_id)
        assert seq.generated == out[0, ids.shape[1]:].tolist()


def test_an_engine_error_reaches_every_sequence_in_hand_and_the_loop_serves_on(trained, loop):
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config, self.weight = trained.model.config, torch.nn.Parameter(torch.zeros(1))

        def forward(self, **kwargs):
            raise RuntimeError("the forward failed")

    current = SimpleNamespace(model=Broken(), tokenizer=trained.tokenizer)
    eng = DecodeLoop(lambda: current, None, 8)
    events = asyncio.Queue()
    texts = ["hello", "What is AI?"]
    eng.waiting.extend(decode_sequence(trained, loop, events, t, 4, index=i) for i, t in enumerate(texts))
    eng.run()
    got = sent_events(loop, events)
    assert [i for i, _ in got] == [0, 1] and all(str(e) == "the forward failed" for _, e in got)
    assert not eng.rows and not eng.waiting
    current.model = trained.model  # the same loop, a working model: it answers
    again = decode_sequence(trained, loop, asyncio.Queue(), "hello", 4)
    eng.waiting.append(again)
    eng.run()
    assert again.finish_reason == "length" and again.generated == decode_alone(trained, loop, "hello", 4)
