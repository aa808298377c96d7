"""Causal language modelling (instruction tuning / SFT): chat, Alpaca and plain-text data, the chat template,
loss on the assistant's tokens, packing, perplexity, exact match and ROUGE-L on generated answers, chat."""

from __future__ import annotations

import json
import logging
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from transformers import AutoModelForCausalLM

from ..data import LabelMap
from ..data.chat import BUNDLED_CHAT, Conversation, cut_at_stops, prompt_ids, read_sft_file, render, tokenize_chat
from ..data.dataset import (
    IGNORE,
    BundledSets,
    Encoded,
    TaskData,
    collate,
    refuse_overlong,
    seeded_split,
    task_splits,
)
from ..data.readers import Columns
from ..errors import TunecraftError
from ..metrics.text import exact_match, rouge_l
from ..runtime.inference import autocast_context, rows_in_input_order
from ..settings import Strict
from .base import Task, TaskSettings, records

log = logging.getLogger(__name__)


class GenerationSettings(Strict):
    """How generative runs (causal_lm, preference, rl) generate: held-out evaluation, the report's samples,
    predict and chat."""

    max_new_tokens: int = Field(48, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0)
    """0 is greedy decoding."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: list[str] = []
    """Strings that end a generated answer (it is cut before them)."""
    eval_samples: int = Field(32, ge=0)
    """Held-out answers generated for exact match and ROUGE-L (0: perplexity only)."""
    report_samples: int = Field(6, ge=0)
    """Of those, shown in the report beside the base model's answer to the same prompt."""
    batch_size: int = Field(16, ge=1)


class CausalLMSettings(TaskSettings):
    """Instruction tuning (SFT): the data format, what takes the loss, packing, overlong examples, generation."""

    name: Literal["causal_lm"] = "causal_lm"
    LEGACY = {"data.sft": "", "generation": "generation"}
    format: Literal["auto", "messages", "sharegpt", "alpaca", "text"] = "auto"
    """JSONL rows with `messages` (OpenAI roles), `conversations` (ShareGPT from/value), Alpaca
    instruction/input/output, or `text`; auto tells them apart per row. A .txt file is plain text per line."""
    train_on: Literal["assistant", "all"] = "assistant"
    """Learn only the assistant's tokens (the prompt and the template's other parts take no loss), or all."""
    packing: bool = False
    """Join whole training examples into rows of up to model.max_length tokens (less padding)."""
    overlong: Literal["error", "drop", "truncate"] = "drop"
    """An example longer than model.max_length: stop with its file and line, drop it, or cut its end. Dropped
    and cut examples are counted in the log and in summary.json (truncated), never silently."""
    generation: GenerationSettings = GenerationSettings()


SFT_KEYS = ("format", "train_on", "packing", "overlong")
"""The settings tunecraft.json keeps under "sft" (runs before task_settings are rebuilt from them)."""


# -- data -------------------------------------------------------------------------------------------------------

def bundled_split(name: str, seed: int, fractions: tuple[float, float]) -> dict[str, list[Conversation]]:
    """A bundled chat set's fixed split by prompt: test, validation, the rest train. Conversations that share
    their prompt (one question, several answers) land in the same split, so no held-out prompt is trained on."""
    groups: dict[str, list[Conversation]] = {}
    for conv in BUNDLED_CHAT[name]():
        groups.setdefault(json.dumps(conv.messages[:-1], ensure_ascii=False), []).append(conv)
    parts = seeded_split(list(groups.values()), [fractions[1], fractions[0]], seed)
    test, validation, train = ([c for group in part for c in group] for part in parts)
    return {"train": train, "validation": validation, "test": test}


# -- encoding ---------------------------------------------------------------------------------------------------

def _assistant_spans(tokenizer, conv: Conversation, full: str) -> list[tuple[int, int]]:
    """Character spans of `full` (the rendered conversation) written by the assistant: from after each
    assistant turn's generation prompt to the end of that turn (its end-of-turn token included)."""
    spans = []
    for i, message in enumerate(conv.messages):
        if message["role"] != "assistant":
            continue
        start = len(render(tokenizer, conv.messages[:i], add_generation_prompt=True)) if i else 0
        through = render(tokenizer, conv.messages[: i + 1])
        if not full.startswith(through):
            raise TunecraftError("the chat template does not render a conversation's prefixes as prefixes of the "
                                 "whole; set task.train_on=all")
        spans.append((start, len(through)))
    return spans


def _encode_one(tokenizer, conv: Conversation, train_on: str) -> tuple[list[int], list[int]]:
    if conv.text is not None:  # plain text: every token is learned, then end of sequence
        ids = tokenizer(conv.text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return ids, list(ids)
    if not tokenizer.chat_template:
        raise TunecraftError("chat data needs a tokenizer with a chat template; this base model has none")
    full = render(tokenizer, conv.messages)
    out = tokenize_chat(tokenizer, full, conv.messages, offsets=True)  # a message's text is text, never a turn
    ids = out["input_ids"]
    if train_on == "all":
        return ids, list(ids)
    spans = _assistant_spans(tokenizer, conv, full)
    labels = [t if any(s <= a < e for s, e in spans) else IGNORE for t, (a, _) in zip(ids, out["offset_mapping"])]
    return ids, labels


def _pack(ids_rows, label_rows, max_len):
    """Whole sequences joined in order into rows of at most max_len tokens (attention spans the row)."""
    out_ids, out_labels, out_samples = [], [], []
    for i, (ids, labels) in enumerate(zip(ids_rows, label_rows)):
        if out_ids and len(out_ids[-1]) + len(ids) <= max_len:
            out_ids[-1] += ids
            out_labels[-1] += [IGNORE, *labels[1:]]  # never predict one sequence's start from the previous one
        else:
            out_ids.append(list(ids))
            out_labels.append(list(labels))
            out_samples.append(i)
    return out_ids, out_labels, out_samples


# -- training ---------------------------------------------------------------------------------------------------

@torch.no_grad()
def next_token_count(batch: dict[str, torch.Tensor]) -> int:
    """The learned next-token targets of a batch (every label but each row's first, -100 left out)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def next_token_loss_sum(outputs, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of each position's logits against the next token, summed over the learned targets."""
    logits = outputs.logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                           ignore_index=IGNORE, reduction="sum")


class NextTokenLoss:
    """`count` and `loss_sum` of an objective trained on next-token targets (the fine-tuning task below and the
    pre-training objective `clm`): every label but each row's first, -100 left out."""

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return next_token_count(batch)

    def loss_sum(self, outputs, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return next_token_loss_sum(outputs, batch)


# -- generation -------------------------------------------------------------------------------------------------

@torch.no_grad()
def generate(model, tokenizer, conversations: list[list[dict]], gen: dict, batch_size: int = 8,
             dtype=None, seed: int = 0) -> list[str]:
    """The assistant's next message for each conversation (greedy when temperature is 0)."""
    model.eval()
    device = next(model.parameters()).device
    sample = gen["temperature"] > 0
    kwargs = {"max_new_tokens": gen["max_new_tokens"], "do_sample": sample,
              "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    kwargs.update({"temperature": gen["temperature"], "top_p": gen["top_p"]} if sample else
                  {"temperature": None, "top_p": None, "top_k": None})
    if sample:
        torch.manual_seed(seed)
    out = []
    for start in range(0, len(conversations), batch_size):
        rows = [{"input_ids": prompt_ids(tokenizer, m)} for m in conversations[start : start + batch_size]]
        batch = tokenizer.pad(rows, return_tensors="pt", padding=True, padding_side="left")
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast_context(device, dtype):
            ids = model.generate(**batch, **kwargs)
        new = ids[:, batch["input_ids"].shape[1]:]
        out += [cut_at_stops(t, gen["stop"]).strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return out


def held_out_prompts(conversations: list[Conversation], limit: int) -> list[tuple[list[dict], str]]:
    """(messages before the last assistant turn, that turn's text) for the first `limit` chat examples."""
    out = []
    for conv in conversations:
        if conv.text is not None:
            continue
        last = max(i for i, m in enumerate(conv.messages) if m["role"] == "assistant")
        out.append((conv.messages[:last], conv.messages[last]["content"]))
        if len(out) == limit:
            break
    return out


class CausalLM(NextTokenLoss, Task):
    """Causal language modelling / instruction tuning: the loss on the learned tokens, scored by perplexity and
    by generating answers."""

    NAME = "causal_lm"
    METRICS = ["loss", "perplexity"]
    HEADLINE = ("perplexity", "loss")
    EARLY_STOPPING = ("loss", "min")
    MODEL_CLASS = AutoModelForCausalLM
    PEFT_TASK_TYPE = "CAUSAL_LM"
    GENERATIVE = True
    # Answers are decoded token by token: one bf16 rounding flips a greedy choice, and which one flips depends on
    # the rows a request shares a batch with (padding, cache joins). In fp32 the served answer is the run's at any
    # concurrency (tests/test_serve_parity.py, docs/serving.md); `--precision bf16` is the faster opt-in.
    AUTO_PRECISION = "fp32"

    LEGACY_SETTINGS = "sft"
    LEGACY_KEYS = SFT_KEYS
    Settings = CausalLMSettings
    BUNDLED = BundledSets(BUNDLED_CHAT, bundled_split, "chat set", lambda name: BUNDLED_CHAT[name]())

    def load_data(self, cfg) -> TaskData:
        fmt_name = self.settings.format
        parts, description = task_splits(cfg, lambda path: read_sft_file(path, fmt_name, cfg.columns), BUNDLED_CHAT,
                                         bundled_split, "chat", "chatterbot-corpus conversations; split by prompt")
        return TaskData(parts["train"], parts["validation"], parts["test"], columns=Columns("messages", None),
                        description=description)

    def read_file(self, path: str, meta: dict, fmt: str) -> list[Conversation]:
        return read_sft_file(path, meta["sft"]["format"] if fmt == "auto" else fmt, meta.get("columns"))

    def options(self, config) -> dict:
        return {"sft": self.settings.model_dump(include=set(SFT_KEYS)),
                "generation": self.settings.generation.model_dump(), "text_column": "messages", "label_column": None}

    def encode(self, tokenizer, conversations: list[Conversation], meta: dict,
               label_map: LabelMap | None = None) -> Encoded:
        """Tokenize each conversation through the chat template, labels only on the learned tokens (-100 elsewhere).
        A conversation longer than max_length is an error, dropped or cut at the end (task.overlong), and
        counted either way; packing then joins whole conversations into rows of up to max_length tokens."""
        opts, max_len = meta["sft"], meta["max_length"]
        ids_rows, label_rows, samples, over = [], [], [], 0
        for index, conv in enumerate(conversations):
            ids, labels = _encode_one(tokenizer, conv, opts["train_on"])
            if len(ids) > max_len:
                over += 1
                refuse_overlong(opts["overlong"], "task.overlong", conv, len(ids), max_len)
                if opts["overlong"] == "drop":
                    continue
                ids, labels = ids[:max_len], labels[:max_len]
            if all(t == IGNORE for t in labels[1:]):
                continue  # nothing left to learn (an assistant answer cut off entirely)
            ids_rows.append(ids)
            label_rows.append(labels)
            samples.append(index)
        if over:
            log.warning("%d of %d conversations are longer than max_length=%d: %s", over, len(conversations), max_len,
                        {"drop": "dropped", "truncate": "cut at the end"}[opts["overlong"]])
        if opts["packing"]:
            ids_rows, label_rows, samples = _pack(ids_rows, label_rows, max_len)
        return Encoded(ids_rows, None, label_rows, over, samples, options={"overlong": opts["overlong"]})

    def build_model(self, base, label_map: LabelMap, dropout: float | None = None):
        if base.path is None:
            raise TunecraftError("causal_lm needs a pretrained base model (smollm2-135m or a local causal-LM folder)")
        kwargs = {"attention_dropout": dropout} if dropout is not None else {}
        # fp32 master weights; bf16 autocast (train.precision) does the fast part
        return AutoModelForCausalLM.from_pretrained(str(base.path), dtype=torch.float32, **kwargs)

    def training_texts(self, conversations: list[Conversation]):
        return (c.text or " ".join(m["content"] for m in c.messages) for c in conversations)

    @torch.no_grad()  # held-out scoring builds no autograd graph (it did: memory for nothing, and a torch warning)
    def infer(self, model, enc: Encoded, batch_size: int, pad_id: int, device: torch.device, dtype=None, rank: int = 0,
              world: int = 1, gather=None) -> torch.Tensor:
        """Per feature (summed negative log-likelihood of its learned tokens, their count): [N, 2]. Keeps no
        logits, which for a 49k vocabulary would not fit in memory for a whole split."""
        model.eval()

        def batch_rows(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            labels = batch.pop("labels")
            with autocast_context(device, dtype):
                logits = model(**batch).logits[:, :-1].float()
            nll = F.cross_entropy(logits.transpose(1, 2), labels[:, 1:], ignore_index=IGNORE, reduction="none")
            counts = (labels[:, 1:] != IGNORE).sum(dim=1)
            return torch.stack([nll.sum(dim=1), counts.float()], dim=1).cpu()

        return rows_in_input_order(enc, batch_size, device, lambda e, idx, m: collate(e, idx, pad_id, m), batch_rows,
                                   2, rank, world, gather)

    def evaluate(self, scores: torch.Tensor, enc: Encoded, label_map: LabelMap) -> dict:
        total, tokens = float(scores[:, 0].sum()), float(scores[:, 1].sum())
        loss = total / max(tokens, 1.0)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": int(tokens), "samples": len(enc)}

    def prediction_rows(self, conversations: list[Conversation], scores, enc: Encoded, label_map) -> list[dict]:
        rows = []
        for sample, (nll, n) in zip(enc.sample, scores.tolist()):
            conv = conversations[sample]
            rows.append({**({"text": conv.text} if conv.text is not None else {"messages": conv.messages}),
                         "tokens": int(n), "loss": round(nll / max(n, 1), 6)})
        return rows

    def generation_eval(self, model, tokenizer, conversations: list[Conversation], gen: dict, dtype=None) -> dict:
        """Exact match and ROUGE-L (LCS F1) of the generated answers against the held-out answers."""
        pairs = held_out_prompts(conversations, gen["eval_samples"]) if gen["eval_samples"] else []  # 0: none
        if not pairs:
            return {}
        answers = generate(model, tokenizer, [p for p, _ in pairs], gen, gen["batch_size"], dtype)
        rows = [{"prompt": p[-1]["content"] if p else "", "reference": ref, "output": a,
                 "exact_match": exact_match(a, ref), "rouge_l": rouge_l(a, ref)} for (p, ref), a in zip(pairs, answers)]
        return {"exact_match": sum(r["exact_match"] for r in rows) / len(rows),
                "rouge_l": sum(r["rouge_l"] for r in rows) / len(rows), "generated": len(rows), "generations": rows}

    def predict(self, trained, inputs: list[str | dict], batch_size: int, dtype, warn: bool = True) -> list[dict]:
        """Each text (or {"text"} record) as the user's message, answered as the run's generation settings say."""
        texts = [r["text"] for r in records(inputs)]
        gen = trained.meta["generation"]
        answers = generate(trained.model, trained.tokenizer, [[{"role": "user", "content": t}] for t in texts], gen,
                           min(batch_size, gen["batch_size"]), dtype)
        return [{"prompt": t, "response": a} for t, a in zip(texts, answers)]
