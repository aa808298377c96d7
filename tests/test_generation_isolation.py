"""One request cannot break or starve the others (serve/routes/generation.py's decode loop, in process on the tiny
decoder): a row whose draw or decoding fails ends alone and the others answer as alone; a prompt whose prefill
fails fails alone; stop strings are matched on the text's tail only; queued requests are admitted in turn; a seeded
request answers the same on a fresh loop's first request as on the next ones."""

import asyncio
from types import SimpleNamespace

import pytest
import torch

from tests.tiny_decoder import decode_alone, decode_sequence, sent_events, tiny_base
from tunecraft.data.chat import prompt_text
from tunecraft.serve.routes.generation import DONE, DecodeLoop, Prefix


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_base(tmp_path_factory.mktemp("isolation") / "base")
    return SimpleNamespace(model=AutoModelForCausalLM.from_pretrained(str(base)).eval(),
                           tokenizer=AutoTokenizer.from_pretrained(str(base)))


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


TEXTS = ["What is AI?", "Tell me a joke.", "Who are you?"]


def test_a_row_whose_draw_fails_ends_alone_and_the_others_answer_as_alone(trained, loop):
    events = asyncio.Queue()
    good = [decode_sequence(trained, loop, events, t, 8, index=i) for i, t in enumerate(TEXTS)]
    # NaN probabilities
    poison = decode_sequence(trained, loop, events, "hello", 8, index=3, temperature=1e-300, seed=5)
    eng = DecodeLoop(lambda: trained, None, 8)
    eng.waiting.extend([good[0], poison, *good[1:]])
    eng.run()
    got = sent_events(loop, events)
    errors = [(i, e) for i, e in got if isinstance(e, BaseException)]
    assert [i for i, _ in errors] == [3] and poison.finish_reason == "error"
    assert [s.finish_reason for s in good] == ["length"] * 3
    assert [s.generated for s in good] == [decode_alone(trained, loop, t, 8) for t in TEXTS]
    assert sorted(i for i, e in got if e is DONE) == [0, 1, 2]


def test_a_row_whose_decoding_fails_mid_flight_ends_alone(trained, loop):
    class Picky:  # the tokenizer fails to decode the poison row's tokens only
        def __init__(self, inner, bad):
            self.inner, self.bad = inner, bad

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def decode(self, ids, **kw):
            if ids is self.bad.generated and len(ids) > 2:
                raise ValueError("cannot decode")
            return self.inner.decode(ids, **kw)

    events = asyncio.Queue()
    rows = [decode_sequence(trained, loop, events, t, 6, index=i) for i, t in enumerate(TEXTS)]
    current = SimpleNamespace(model=trained.model, tokenizer=Picky(trained.tokenizer, rows[1]))
    eng = DecodeLoop(lambda: current, None, 8)
    eng.waiting.extend(rows)
    eng.run()
    got = sent_events(loop, events)
    assert [(i, str(e)) for i, e in got if isinstance(e, BaseException)] == [(1, "cannot decode")]
    assert rows[1].finish_reason == "error" and rows[1].tokens == 3
    assert [rows[0].generated, rows[2].generated] == [decode_alone(trained, loop, TEXTS[0], 6),
                                                        decode_alone(trained, loop, TEXTS[2], 6)]


def test_an_empty_prompt_fails_its_own_prefill_only(trained, loop):
    events = asyncio.Queue()
    empty = decode_sequence(trained, loop, events, "", 4, index=0, ids=[])
    rows = [decode_sequence(trained, loop, events, t, 4, index=i + 1) for i, t in enumerate(TEXTS)]
    eng = DecodeLoop(lambda: trained, None, 8)
    eng.waiting.extend(rows)
    eng.admit()
    eng.step()
    eng.waiting.append(empty)  # admitted alone, mid-flight: its prefill (no tokens) raises
    eng.run()
    got = sent_events(loop, events)
    assert [i for i, e in got if isinstance(e, BaseException)] == [0] and empty.finish_reason == "error"
    assert [s.generated for s in rows] == [decode_alone(trained, loop, t, 4) for t in TEXTS]


def test_stop_matching_on_the_new_tail_still_finds_the_stop_once_decoded(trained, loop):
    """Only the tail that may hold a new match is searched; a stop string is still found the step it appears,
    and one that never appears never stops the answer."""
    s = decode_sequence(trained, loop, asyncio.Queue(), "x", 10_000, stops=["never" * 12 + "!!!!", "zz"])
    fake = SimpleNamespace(decode=lambda ids, **kw: "ab" * len(ids), eos_token_id=0)
    for token in range(1, 2001):
        s.add(token, fake, {0}, 0.0)
    assert s.finish_reason is None and len(s.text) == 4000
    fake.decode = lambda ids, **kw: "ab" * (len(ids) - 1) + "zz"
    s.add(2001, fake, {0}, 0.0)
    assert s.finish_reason == "stop"


def test_queued_requests_are_admitted_in_turn_not_first_come_first_served(trained, loop):
    big, small = asyncio.Queue(), asyncio.Queue()
    bigs = [decode_sequence(trained, loop, big, "What is AI?", 2, index=i) for i in range(12)]
    smalls = [decode_sequence(trained, loop, small, "hello", 2, index=0)]
    eng = DecodeLoop(lambda: trained, None, 4)
    eng.waiting.extend(bigs + smalls)
    eng.admit()
    assert smalls[0] in eng.rows and len(eng.rows) == 4  # round one: each request's first; then the big one's
    assert [s.index for s in eng.rows if s.events is big] == [0, 1, 2]
    eng.run()
    assert all(s.finish_reason == "length" for s in bigs + smalls)


def test_a_seeded_request_answers_the_same_on_a_fresh_loops_first_request_and_after(trained, loop):
    text = prompt_text(trained.tokenizer, [{"role": "user", "content": "Tell me a joke."}])
    ids = trained.tokenizer(text, add_special_tokens=False)["input_ids"]
    eng = DecodeLoop(lambda: trained, None, 8)
    answers = []
    for _ in range(3):
        s = decode_sequence(trained, loop, asyncio.Queue(), "", 12, ids=ids, temperature=1.0, seed=7)
        eng.waiting.append(s)
        eng.run()
        answers.append(s.generated)
        # a cached prefix whose K/V differ from the whole prompt's (as a prefix prefilled apart rounds differently)
        # must not change a seeded answer
        head = ids[:20]
        cache = torch.randn(1, trained.model.config.num_key_value_heads, len(head),
                            trained.model.config.hidden_size // trained.model.config.num_attention_heads)
        eng.prefixes[None] = Prefix(head, [(cache, cache) for _ in range(trained.model.config.num_hidden_layers)])
    assert answers[0] == answers[1] == answers[2]
