"""Pre-training objectives, each an `Objective` (tasks/base.py), the contract the training loop calls
(collate, count, loss_sum, infer, evaluate): masked LM (+ NSP / sentence order) over packed sentences, causal
LM over packed token streams."""

from __future__ import annotations

import math
import random
import zlib

import torch
import torch.nn.functional as F

from ..data.dataset import IGNORE, Encoded, collate
from ..tasks.base import Objective
from ..tasks.causal_lm import NextTokenLoss
from .corpora import Document


def _tokenize_sentences(tokenizer, docs: list[Document], whole_word: bool):
    """Every sentence's token ids without special tokens (and word ids for whole-word masking)."""
    flat = [s for d in docs for s in d]
    enc = tokenizer(flat, add_special_tokens=False)
    words = [enc.word_ids(i) for i in range(len(flat))] if whole_word else None
    out, k = [], 0
    for d in docs:
        out.append([(enc["input_ids"][k + j], words[k + j] if words else None) for j in range(len(d))])
        k += len(d)
    return out


def _pieces(sent: list[tuple], budget: int):
    """A sentence cut into pieces of at most `budget` tokens: [(ids, word_ids)]."""
    ids, words = sent
    return [(ids[i : i + budget], words[i : i + budget] if words else None) for i in range(0, len(ids), budget)]


class PretrainObjective(Objective):
    """Held-out scoring shared by the pre-training objectives: loss, perplexity and token accuracy (masked
    tokens, or next tokens) with fixed masks, summed over batches in order (every process scores all of them)."""

    METRICS = ["loss", "perplexity", "accuracy"]
    HEADLINE = ("accuracy", "pair_accuracy")
    EARLY_STOPPING = ("loss", "min")

    def batch_stats(self, outputs, batch) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def infer(self, model, enc: Encoded, batch_size: int, pad_id: int, device, dtype=None, rank: int = 0,
              world: int = 1, gather=None) -> dict[str, float]:
        model.eval()
        totals: dict[str, float] = {}
        for start in range(0, len(enc), batch_size):
            batch = self.collate(enc, list(range(start, min(start + batch_size, len(enc)))), pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else torch.autocast(device.type,
                                                                                                      enabled=False)
            with ctx:
                outputs = model(**{k: v for k, v in batch.items() if k not in ("labels", "next_sentence_label")})
            for key, value in self.batch_stats(outputs, batch).items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def evaluate(self, totals: dict[str, float], enc: Encoded, label_map=None) -> dict:
        loss = totals["loss_sum"] / max(totals["count"], 1)
        out = {"loss": loss, "perplexity": math.exp(min(loss, 50)),
               "accuracy": totals["correct"] / max(totals["count"], 1), "tokens": int(totals["count"])}
        if "pairs" in totals:
            out["pair_accuracy"] = totals["pair_correct"] / totals["pairs"]
        return out


class MaskedLM(PretrainObjective):
    """BERT's masked LM: mlm_probability of the tokens are chosen, 80% become [MASK], 10% a random token,
    10% stay; with `whole_word`, words are chosen and all their tokens masked. Masks are drawn per batch from a
    generator seeded by (seed, batch indices), so a resumed run masks exactly as the uninterrupted one would.
    Written by hand rather than with DataCollatorForLanguageModeling for that seeded, resumable draw."""

    NAME = "mlm"

    def __init__(self, tokenizer, cfg, seed: int):
        self.cfg, self.seed = cfg, seed
        self.mask_id, self.vocab_size = tokenizer.mask_token_id, len(tokenizer)
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.pair = cfg.sentence_pair

    # -- sequences --------------------------------------------------------------------------------
    def encode(self, tokenizer, docs: list[Document], max_length: int, seed: int) -> Encoded:
        sents = _tokenize_sentences(tokenizer, docs, self.cfg.whole_word)
        if self.pair:
            return self._encode_pairs(sents, max_length, random.Random(seed))
        budget = max_length - 2
        ids_out, words_out = [], []
        for doc in sents:
            cur, cur_words, offset = [], [], 0
            for sent in doc:
                for ids, words in _pieces(sent, budget):
                    if cur and len(cur) + len(ids) > budget:
                        ids_out.append([self.cls, *cur, self.sep])
                        words_out.append([None, *cur_words, None])
                        cur, cur_words = [], []
                    cur.extend(ids)
                    cur_words.extend((w + offset if w is not None else None) for w in (words or [None] * len(ids)))
                    offset += (max((w for w in words if w is not None), default=-1) + 1) if words else 0
            if cur:
                ids_out.append([self.cls, *cur, self.sep])
                words_out.append([None, *cur_words, None])
        return Encoded(ids_out, None, None, 0, word_ids=words_out if self.cfg.whole_word else None)

    def _encode_pairs(self, sents, max_length: int, rng: random.Random) -> Encoded:
        """Segment pairs A, B filling max_length: NSP replaces B by text from another document half of the time
        (label 1); SOP swaps A and B half of the time (label 1)."""
        budget = max_length - 3
        pieces = [[p for s in doc for p in _pieces(s, budget // 2)] for doc in sents]
        ids_out, types_out, labels, words_out = [], [], [], []
        for d, doc in enumerate(pieces):
            i = 0
            while i < len(doc):
                chunk, total = [], 0
                while i < len(doc) and (not chunk or total + len(doc[i][0]) <= budget):
                    chunk.append(doc[i])
                    total += len(doc[i][0])
                    i += 1
                flat = [t for ids, _ in chunk for t in ids]
                if len(flat) < 2:
                    continue
                if len(chunk) > 1:
                    cut = sum(len(ids) for ids, _ in chunk[: rng.randint(1, len(chunk) - 1)])
                else:
                    cut = len(flat) // 2
                a, b = flat[:cut], flat[cut:]
                label = int(rng.random() < 0.5)
                if label and self.pair == "sop":
                    a, b = b, a
                elif label:
                    other = (d + rng.randrange(1, len(pieces))) % len(pieces) if len(pieces) > 1 else d
                    start = rng.randrange(len(pieces[other])) if other != d and pieces[other] else 0
                    random_b = [t for ids, _ in pieces[other][start:] for t in ids][: budget - len(a)]
                    if other != d and random_b:
                        b = random_b
                    else:  # a one-document corpus (or an empty other document): keep the true next segment
                        label = 0
                ids_out.append([self.cls, *a, self.sep, *b, self.sep])
                types_out.append([0] * (len(a) + 2) + [1] * (len(b) + 1))
                labels.append(label)
                words_out.append(None)
        return Encoded(ids_out, types_out, labels, 0)

    # -- batches ----------------------------------------------------------------------------------
    def collate(self, enc: Encoded, indices: list[int], pad_id: int, multiple: int = 1) -> dict[str, torch.Tensor]:
        batch = collate(enc, indices, pad_id, multiple)
        if "labels" in batch:  # the sentence-pair labels
            batch["next_sentence_label"] = batch.pop("labels")
        gen = torch.Generator().manual_seed(zlib.crc32(repr((self.seed, indices)).encode()))
        ids = batch["input_ids"]
        special = torch.isin(ids, self.special)
        if self.cfg.whole_word and enc.word_ids is not None:
            chosen = self._choose_words(enc, indices, ids.shape, gen)
        else:
            chosen = torch.rand(ids.shape, generator=gen) < self.cfg.mlm_probability
        chosen &= ~special
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
        roll = torch.rand(ids.shape, generator=gen)
        masked = ids.clone()
        masked[chosen & (roll < 0.8)] = self.mask_id
        swap = chosen & (roll >= 0.8) & (roll < 0.9)
        masked[swap] = torch.randint(self.vocab_size, ids.shape, generator=gen)[swap]
        batch["input_ids"], batch["labels"] = masked, labels
        return batch

    def _choose_words(self, enc: Encoded, indices: list[int], shape, gen) -> torch.Tensor:
        words = torch.full(shape, -1, dtype=torch.long)
        for row, i in enumerate(indices):
            seen: dict[int, int] = {}
            for col, w in enumerate(enc.word_ids[i]):
                if w is not None:
                    words[row, col] = seen.setdefault(w, len(seen))
        draw = torch.rand((shape[0], int(words.max()) + 2), generator=gen) < self.cfg.mlm_probability
        return torch.gather(draw, 1, words.clamp(min=0)) & (words >= 0)

    # -- loss -------------------------------------------------------------------------------------
    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum())

    @staticmethod
    def _mlm_logits(outputs):
        return outputs.prediction_logits if hasattr(outputs, "prediction_logits") else outputs.logits

    def loss_sum(self, outputs, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self._mlm_logits(outputs).float()
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), batch["labels"].view(-1), ignore_index=IGNORE,
                               reduction="sum")
        if "next_sentence_label" in batch:  # weighted so that the mean loss is MLM mean + pair-task mean
            pair = F.cross_entropy(outputs.seq_relationship_logits.float(), batch["next_sentence_label"])
            loss = loss + pair * self.count(batch)
        return loss

    def batch_stats(self, outputs, batch) -> dict[str, float]:
        logits = self._mlm_logits(outputs).float()
        keep = batch["labels"] != IGNORE
        stats = {"loss_sum": float(F.cross_entropy(logits[keep], batch["labels"][keep], reduction="sum")),
                 "count": int(keep.sum()), "correct": int((logits[keep].argmax(-1) == batch["labels"][keep]).sum())}
        if "next_sentence_label" in batch:
            pred = outputs.seq_relationship_logits.argmax(-1)
            stats["pair_correct"] = int((pred == batch["next_sentence_label"]).sum())
            stats["pairs"] = len(pred)
        return stats


class CausalLM(NextTokenLoss, PretrainObjective):
    """Next-token prediction over documents packed end to end (an end-of-text token between them) into
    blocks of exactly max_length tokens: no padding."""

    NAME = "clm"

    def __init__(self, tokenizer, cfg, seed: int):
        self.eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id

    def encode(self, tokenizer, docs: list[Document], max_length: int, seed: int) -> Encoded:
        texts = [" ".join(d) for d in docs]
        stream: list[int] = []
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.append(self.eos)
        blocks = [stream[i : i + max_length] for i in range(0, len(stream) - max_length + 1, max_length)]
        if not blocks and len(stream) > 1:
            blocks = [stream]
        return Encoded(blocks, None, None, 0)

    def collate(self, enc: Encoded, indices: list[int], pad_id: int, multiple: int = 1) -> dict[str, torch.Tensor]:
        batch = collate(enc, indices, pad_id, multiple)
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE)
        return batch

    def batch_stats(self, outputs, batch) -> dict[str, float]:
        logits, target = outputs.logits[:, :-1].float(), batch["labels"][:, 1:]
        keep = target != IGNORE
        return {"loss_sum": float(F.cross_entropy(logits[keep], target[keep], reduction="sum")),
                "count": int(keep.sum()), "correct": int((logits[keep].argmax(-1) == target[keep]).sum())}


OBJECTIVES = {"mlm": MaskedLM, "clm": CausalLM}
