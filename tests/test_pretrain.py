"""Tokenizer training and pre-training (MLM, NSP/SOP, causal LM) on small slices of the bundled real text."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunecraft.config import build_config
from tunecraft.data.dataset import IGNORE
from tunecraft.errors import ConfigError
from tunecraft.plugins import AfterStep
from tunecraft.pretrain.config import ObjectiveConfig, PretrainRecipe, TokenizerRecipe
from tunecraft.pretrain.corpora import load_corpus, pd_text, sentences, wiki_en, zh_reviews
from tunecraft.pretrain.job import pretrain, unigram_baseline
from tunecraft.pretrain.objectives import CausalLM, MaskedLM
from tunecraft.pretrain.tokenizer import build_tokenizer, train_tokenizer
from tunecraft.tasks.token_classification import bundled_split
from tunecraft.train import train
from tunecraft.train.checkpoint import latest_checkpoint

QUIET = {"progress": False, "tensorboard": False, "num_threads": 1}


@pytest.fixture(scope="module")
def wiki():
    return wiki_en()


@pytest.fixture(scope="module")
def pd_docs():
    return pd_text()


def test_pd_text_leaves_out_every_ner_test_line(pd_docs):
    test = {s.text for s in bundled_split("pd-ner", 42, (0.1, 0.1))["test"]}
    text = {"".join(d) for d in pd_docs}
    assert len(test) > 1500 and len(text) > 14000
    assert not test & text
    other_seed = {s.text for s in bundled_split("pd-ner", 7, (0.1, 0.1))["test"]}
    assert other_seed & {"".join(d) for d in pd_text(split_seed=42)}  # the split, not luck, keeps them out


def test_zh_reviews_corpus_leaves_out_every_sentiment_test_text():
    from tunecraft.data.dataset import load_eval_examples
    from tunecraft.data.readers import Columns

    def texts(split, seed=42):  # sentence splitting drops the spaces between sentences: compare without them
        return {"".join(e.text.split()) for e in load_eval_examples("zh-reviews", Columns("text", "label", None),
                                                                     split=split, seed=seed)}

    def corpus(split_seed=42):
        return {"".join("".join(d).split()) for d in zh_reviews(split_seed=split_seed)}

    kept, test = corpus(), texts("test")
    assert len(test) >= 1_730 and len(kept) >= 17_363 - 1_736 - 10
    assert not test & kept
    assert texts("validation") <= kept and texts("train") <= kept
    assert texts("test", seed=7) & kept  # the split, not luck, keeps them out


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_trained_tokenizer_reloads_with_autotokenizer_and_round_trips(tmp_path, kind):
    recipe = TokenizerRecipe(name=kind, output_dir=str(tmp_path), kind=kind, vocab_size=2000,
                             corpus={"sources": ["wiki-en"], "max_documents": 60, "heldout": 0.1})
    result = train_tokenizer(recipe)
    tok = AutoTokenizer.from_pretrained(result["path"])
    assert len(tok) == result["vocab_size"] == 2000
    text = "The city council approved the new budget in 1998."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    held = result["heldout"]
    assert held["sentences"] > 20 and 5 < held["tokens_per_sentence"] < 80
    assert held["unk_rate"] == 0.0 if kind == "bpe" else held["unk_rate"] < 0.01
    saved = json.loads((tmp_path / kind / "tokenizer_report.json").read_text())
    assert saved["heldout"] == held
    with pytest.raises(Exception, match="already exists"):
        train_tokenizer(recipe)


def test_char_tokenizer_on_chinese_text(pd_docs):
    texts = sentences(pd_docs[:400])
    tok = build_tokenizer(TokenizerRecipe(kind="chars", vocab_size=600, min_frequency=1), texts)
    assert len(tok) == 600
    ids = tok(texts[0], add_special_tokens=False)["input_ids"]
    assert len(ids) == len("".join(texts[0].split()))  # one token per character


def test_masking_statistics_follow_bert(pd_docs):
    tok = build_tokenizer(TokenizerRecipe(kind="chars", vocab_size=3000, min_frequency=1), sentences(pd_docs[:2000]))
    mlm = MaskedLM(tok, ObjectiveConfig(), seed=1)
    enc = mlm.encode(tok, pd_docs[:2000], 128, seed=1)
    chosen = masked = random = kept = candidates = 0
    for start in range(0, len(enc), 64):
        idx = list(range(start, min(start + 64, len(enc))))
        original = [enc.input_ids[i] for i in idx]
        batch = mlm.collate(enc, idx, tok.pad_token_id)
        for row, seq in enumerate(original):
            n = len(seq)
            labels, ids = batch["labels"][row, :n], batch["input_ids"][row, :n]
            assert labels[0] == IGNORE and labels[n - 1] == IGNORE  # [CLS]/[SEP] are never chosen
            assert (batch["labels"][row, n:] == IGNORE).all()
            sel = labels != IGNORE
            candidates += n - 2
            chosen += int(sel.sum())
            assert torch.equal(labels[sel], torch.tensor(seq)[sel])
            masked += int((ids[sel] == tok.mask_token_id).sum())
            kept += int((ids[sel] == labels[sel]).sum())
    random = chosen - masked - kept
    assert candidates > 100_000
    assert abs(chosen / candidates - 0.15) < 0.005
    assert abs(masked / chosen - 0.8) < 0.01
    assert abs(kept / chosen - 0.1) < 0.01  # a random draw that hits the original token counts as kept
    assert abs(random / chosen - 0.1) < 0.01
    again = mlm.collate(enc, list(range(64)), tok.pad_token_id)
    assert torch.equal(again["input_ids"], mlm.collate(enc, list(range(64)), tok.pad_token_id)["input_ids"])


def test_whole_word_masking_masks_all_pieces_of_a_word(wiki):
    tok = build_tokenizer(TokenizerRecipe(kind="wordpiece", vocab_size=1000), sentences(wiki[:40]))
    mlm = MaskedLM(tok, ObjectiveConfig(whole_word=True), seed=3)
    enc = mlm.encode(tok, wiki[:40], 64, seed=3)
    batch = mlm.collate(enc, list(range(200)), tok.pad_token_id)
    split_words = 0
    for row, i in enumerate(range(200)):
        words = enc.word_ids[i]
        chosen = (batch["labels"][row, : len(words)] != IGNORE).tolist()
        by_word: dict[int, set] = {}
        for w, c in zip(words, chosen):
            if w is not None:
                by_word.setdefault(w, set()).add(c)
        assert all(len(v) == 1 for v in by_word.values())
        split_words += sum(1 for w in set(words) if w is not None and words.count(w) > 1)
    assert split_words > 50  # the test saw many multi-piece words


def test_sentence_pairs_nsp_and_sop(pd_docs):
    tok = build_tokenizer(TokenizerRecipe(kind="chars", vocab_size=3000, min_frequency=1), sentences(pd_docs[:500]))
    for kind in ("nsp", "sop"):
        mlm = MaskedLM(tok, ObjectiveConfig(sentence_pair=kind), seed=1)
        enc = mlm.encode(tok, pd_docs[:500], 128, seed=1)
        assert 0.4 < sum(enc.labels) / len(enc) < 0.6
        assert all(len(ids) <= 128 and ids.count(tok.sep_token_id) == 2 for ids in enc.input_ids)
        assert all(types[0] == 0 and types[-1] == 1 for types in enc.token_type_ids)
        batch = mlm.collate(enc, list(range(8)), tok.pad_token_id)
        assert batch["next_sentence_label"].shape == (8,) and "token_type_ids" in batch


def test_causal_lm_packs_full_blocks_and_unigram_baseline(wiki):
    tok = build_tokenizer(TokenizerRecipe(kind="bpe", vocab_size=1000), sentences(wiki[:30]))
    clm = CausalLM(tok, ObjectiveConfig(name="clm"), 0)
    enc = clm.encode(tok, wiki[:30], 64, 0)
    assert all(n == 64 for n in enc.lengths)
    total = sum(len(tok(" ".join(d), add_special_tokens=False)["input_ids"]) + 1 for d in wiki[:30])
    assert len(enc) == total // 64
    batch = clm.collate(enc, [0, 1], tok.pad_token_id)
    assert torch.equal(batch["labels"], batch["input_ids"]) and clm.count(batch) == 2 * 63
    base = unigram_baseline(enc.input_ids[:100], enc.input_ids[100:120], len(tok))
    assert base["tokens"] == 20 * 63 and 50 < base["perplexity"] < len(tok)


def _recipe(tmp, name, **sections):
    raw = {"name": name, "output_dir": str(tmp), "seed": 5,
           "model": {"base": "scratch:encoder-tiny", "tokenizer": "chars", "max_length": 64},
           "corpus": {"sources": ["pd-text"], "max_documents": 300, "heldout": 0.05},
           "train": {"epochs": 1, "batch_size": 16, "lr": 2e-3, "log_every": 2, **QUIET}, "mfu_probe": False}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value) if isinstance(value, dict) else raw.__setitem__(key, value)
    return PretrainRecipe.model_validate(raw)


def test_mlm_loss_drops_on_a_tiny_repeated_corpus(tmp_path, write):
    text = "\n\n".join(["人民日报社论指出，经济发展需要稳定的环境。"] * 40)
    recipe = _recipe(tmp_path, "tiny", corpus={"sources": [], "files": [write("tiny.txt", text)], "heldout": 0.1,
                                               "max_documents": None},
                     train={"max_steps": 40, "eval_every": 10, "eval_each_epoch": False, "lr": 5e-3,
                            "warmup_ratio": 0.0})
    summary = pretrain(recipe)
    records = [json.loads(x) for x in (tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()]
    first = records[0]
    assert first["type"] == "train" and first["step"] == 2 and first["loss"] > 2.0  # ≈ ln(vocabulary) at start
    assert [r["step"] for r in records if r["type"] == "eval"] == [10, 20, 30, 40]
    assert summary["heldout"]["loss"] < 0.2 and summary["heldout"]["accuracy"] > 0.9


class Interrupt(Exception):
    pass


def test_pretraining_resume_reproduces_the_uninterrupted_run_and_feeds_train(tmp_path):
    settings = dict(train={"max_steps": 8, "checkpoint_every": 3, "eval_every": 4})
    whole = pretrain(_recipe(tmp_path, "whole", **settings))
    assert whole["mfu"] is None and whole["heldout"]["perplexity"] > 1

    cut = _recipe(tmp_path, "cut", **settings)

    def stop(loop):
        if loop.state.global_step == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        pretrain(cut, plugins=[AfterStep(stop)])
    assert latest_checkpoint(cut.run_dir / "checkpoints").name == "step-4"
    resumed = pretrain(cut, resume=True)
    assert resumed["heldout"] == whole["heldout"]

    def lines(name):
        drop = ("tokens_per_s", "model_flops_per_s", "mfu")
        return [{k: v for k, v in json.loads(x).items() if k not in drop}
                for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    assert lines("cut") == lines("whole")
    from safetensors.torch import load_file

    a, b = (load_file(tmp_path / n / "model" / "model.safetensors") for n in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    # the pre-trained folder is a base model for fine-tuning; its encoder weights are carried over
    config = build_config({"name": "ner", "output_dir": str(tmp_path), "task": "token_classification",
                           "model": {"base": str(tmp_path / "whole" / "model"), "max_length": 64},
                           "data": {"dataset": "pd-ner", "max_train_samples": 64, "max_eval_samples": 32},
                           "baselines": {"lexicon": False},
                           "train": {"max_steps": 2, "batch_size": 16, **QUIET}})
    summary = train(config)
    assert summary["steps"] == 2 and "f1" in summary["metrics"]
    tuned = load_file(tmp_path / "ner" / "model" / "model.safetensors")
    key = "bert.embeddings.word_embeddings.weight"
    assert tuned[key].shape == a[key].shape


def test_decoder_pretraining_writes_a_causal_lm_folder(tmp_path, wiki):
    recipe = TokenizerRecipe(name="bpe", output_dir=str(tmp_path), kind="bpe", vocab_size=1000,
                             corpus={"sources": ["wiki-en"], "max_documents": 20})
    train_tokenizer(recipe)
    run = _recipe(tmp_path, "clm", model={"base": "scratch:decoder-tiny", "tokenizer": str(tmp_path / "bpe")},
                  objective={"name": "clm"}, corpus={"sources": ["wiki-en"], "max_documents": 20},
                  train={"max_steps": 6, "eval_every": 3}, prompts=["The city"], mfu_probe=True)
    summary = pretrain(run)
    assert summary["unigram_baseline"]["perplexity"] > 1 and 0 < summary["mfu"] < 1
    assert summary["samples"][0]["text"].startswith("The city")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "clm" / "model"))
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    assert "Samples" in (tmp_path / "clm" / "report.md").read_text()


def test_recipe_errors_name_the_key():
    from tunecraft.config import load_recipe

    with pytest.raises(ConfigError, match="unknown key 'objective.mask_prob'"):
        load_recipe("recipes/pd-pretrain-mlm.yaml", ["objective.mask_prob=0.2"], PretrainRecipe)
    with pytest.raises(ConfigError, match="sentence_pair is for mlm"):
        load_recipe("recipes/wiki-decoder-clm.yaml", ["objective.sentence_pair=nsp"], PretrainRecipe)
    with pytest.raises(Exception, match="unknown corpus 'wiki'"):
        load_corpus(PretrainRecipe(corpus={"sources": ["wiki"]}).corpus)


def test_cli_trains_a_tokenizer_then_pretrains_with_it(tmp_path, capsys):
    from tunecraft.cli import main

    out = str(tmp_path)
    assert main(["tokenizer", "recipes/wiki-bpe-tokenizer.yaml", f"output_dir={out}", "vocab_size=800",
                 "corpus.max_documents=15"]) == 0
    assert "unknown rate 0.0000%" in capsys.readouterr().out
    assert main(["pretrain", "recipes/wiki-decoder-clm.yaml", f"output_dir={out}",
                 f"model.tokenizer={out}/wiki-bpe-tokenizer", "corpus.max_documents=15", "train.max_steps=3",
                 "train.num_threads=1", "prompts=[]", "mfu_probe=false", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "unigram baseline (same tokenizer): perplexity" in printed
    assert (tmp_path / "wiki-decoder-clm" / "model" / "config.json").is_file()
    assert main(["pretrain", "recipes/wiki-decoder-clm.yaml", f"output_dir={out}"]) == 2  # exists: refused
