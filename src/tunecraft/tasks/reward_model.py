"""Reward models: a scalar head on an encoder or a decoder, trained on preference pairs with the Bradley–Terry
loss (optionally with a margin); scored by held-out pairwise accuracy, the reward margins and their
calibration. A run scores texts, or answers to prompts (`predict`, `POST /v1/reward`): a reward to align on."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from transformers import AutoModelForSequenceClassification

from ..data import LabelMap
from ..data.dataset import BundledSets, Encoded, TaskData, collate, refuse_overlong, task_splits
from ..data.preferences import PreferencePair, Prompt, read_preference_file, render_completion, render_prompt
from ..data.rated_pairs import BUNDLED_PAIRS, bundled_pairs_split, describe_pairs
from ..data.readers import Columns
from ..errors import ConfigError, TunecraftError
from ..runtime.inference import predict_logits
from .base import Task, TaskSettings

log = logging.getLogger(__name__)

REWARD = LabelMap(["reward"])
"""The head's one output."""
CALIBRATION_BINS = 5
"""Bins of the model's confidence σ(|r_chosen − r_rejected|) over [0.5, 1] in the calibration table and plot."""


class RewardModelSettings(TaskSettings):
    """Reward models: pairs scored by a scalar head, trained with the Bradley–Terry loss."""

    name: Literal["reward_model"] = "reward_model"
    LEGACY = {"reward_model": ""}
    margin_scale: float = Field(0.0, ge=0.0)
    """The loss is −log σ(r_chosen − r_rejected − margin_scale × the pair's `margin`) (Llama 2's margin loss):
    pairs the data says differ more must be scored further apart. 0 ignores the margins; a pair without one
    counts as margin 0."""
    overlong: Literal["error", "drop", "truncate"] = "drop"
    """A pair whose chosen or rejected text (with its prompt) is longer than model.max_length tokens: stop with
    its file and line, drop the pair, or cut the texts to max_length (an encoder's prompt/answer pair loses
    tokens from the longer of the two first). Dropped and cut pairs are counted in the log and in summary.json
    (truncated). `predict` and `serve` always cut, and say so per text."""


@dataclass
class PairEncoded(Encoded):
    """Pairs: `input_ids` (and `token_type_ids`) hold each pair's chosen row, `rejected_ids` (`rejected_types`)
    its rejected row, `labels` the margin the loss subtracts (margin_scale × the pair's margin, 0.0 without),
    `margins` the pairs' own margins (None where a pair has none) and `sample` each pair's example."""

    rejected_ids: list[list[int]] = field(default_factory=list)
    rejected_types: list[list[int]] | None = None
    margins: list[float | None] = field(default_factory=list)

    @property
    def lengths(self) -> list[int]:
        return [max(len(c), len(r)) for c, r in zip(self.input_ids, self.rejected_ids)]

    def rows(self, indices: list[int] | None = None) -> Encoded:
        """The chosen rows of `indices` (all pairs by default), then their rejected rows: one forward for both."""
        indices = range(len(self)) if indices is None else indices
        types = None
        if self.token_type_ids is not None:
            types = [self.token_type_ids[i] for i in indices] + [self.rejected_types[i] for i in indices]
        return Encoded([self.input_ids[i] for i in indices] + [self.rejected_ids[i] for i in indices], types, None, 0)


# -- encoding ---------------------------------------------------------------------------------------------------

def model_input(tokenizer, prompt: Prompt, answer: str) -> tuple[str, str | None]:
    """What the model reads for an answer to a prompt. An encoder (a tokenizer that joins two texts with a
    separator) reads (prompt, answer) as a text pair, or the answer alone when there is no prompt; a decoder
    reads the rendered prompt followed by the answer as the chat template closes it (plain text: the answer and
    end of sequence), and its score is read at the last token that is not padding."""
    if tokenizer.sep_token is not None:
        if not prompt:
            return answer, None
        return (prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)), answer
    return render_prompt(tokenizer, prompt) + render_completion(tokenizer, prompt, answer), None


def tokenize_rows(tokenizer, items: list[tuple[Prompt, str]], max_length: int
                  ) -> tuple[list[list[int]], list[list[int]] | None, list[int]]:
    """(ids, token type ids or None, length before any cut) of each (prompt, answer), cut to max_length."""
    encoder = tokenizer.sep_token is not None
    texts = [model_input(tokenizer, p, a) for p, a in items]
    ids: list = [None] * len(texts)
    types: list | None = [None] * len(texts)
    lengths = [0] * len(texts)
    for paired in (False, True):  # a batch call takes text pairs for all its rows or for none
        index = [i for i, (_, second) in enumerate(texts) if (second is not None) == paired]
        if not index:
            continue
        firsts = [texts[i][0] for i in index]
        seconds = [texts[i][1] for i in index] if paired else None
        out = tokenizer(firsts, seconds, add_special_tokens=encoder, truncation=False)
        long = [j for j, row in enumerate(out["input_ids"]) if len(row) > max_length]
        cut = tokenizer([firsts[j] for j in long], [seconds[j] for j in long] if paired else None,
                        add_special_tokens=encoder, truncation=True, max_length=max_length) if long else None
        for j, i in enumerate(index):
            lengths[i] = len(out["input_ids"][j])
            ids[i] = out["input_ids"][j]
            types[i] = out["token_type_ids"][j] if "token_type_ids" in out else None
        for k, j in enumerate(long):
            ids[index[j]] = cut["input_ids"][k]
            if "token_type_ids" in cut:
                types[index[j]] = cut["token_type_ids"][k]
    return ids, (types if types and types[0] is not None else None), lengths


def ensure_pad_token(tokenizer) -> None:
    """A decoder's tokenizer may have no padding token: pad with end of sequence (the head reads the last token
    that is not padding, so the answer's last token)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise TunecraftError("the tokenizer has neither a padding nor an end-of-sequence token to pad with")
        tokenizer.pad_token = tokenizer.eos_token


# -- the loss ---------------------------------------------------------------------------------------------------

def bradley_terry_loss_sum(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Σ −log σ(r_chosen − r_rejected − margin): the Bradley–Terry pairwise loss of reward modelling (Ouyang
    et al. 2022, InstructGPT), with Llama 2's margin (Touvron et al. 2023). Written here because the loop needs the
    sum (for exact accumulation); TRL's RewardTrainer computes the same mean."""
    return -F.logsigmoid(chosen.float() - rejected.float() - margin.float()).sum()


# -- metrics ----------------------------------------------------------------------------------------------------

def pair_metrics(scores: torch.Tensor, target: torch.Tensor, margins: list[float | None]) -> dict:
    """Metrics of rewards `scores` [N, 2] (chosen, rejected): pairwise accuracy (a tie counts half), the
    loss, the margins' distribution, the calibration of P(chosen preferred) = σ(margin) and, when the pairs
    carry margins, the accuracy per quartile of them."""
    m = (scores[:, 0] - scores[:, 1]).float()
    n = len(m)
    if not n:
        return {"accuracy": 0.0, "loss": 0.0, "mean_margin": 0.0, "samples": 0}
    won = (m > 0).float() + 0.5 * (m == 0).float()
    quantiles = torch.quantile(m, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9]))
    confidence = torch.sigmoid(m.abs())
    calibration, ece = [], 0.0
    for b in range(CALIBRATION_BINS):
        low, high = 0.5 + 0.5 * b / CALIBRATION_BINS, 0.5 + 0.5 * (b + 1) / CALIBRATION_BINS
        inside = (confidence >= low) & ((confidence < high) if b < CALIBRATION_BINS - 1 else (confidence <= high))
        count = int(inside.sum())
        if count:
            predicted, observed = float(confidence[inside].mean()), float(won[inside].mean())
            ece += count / n * abs(predicted - observed)
            calibration.append({"low": low, "high": high, "pairs": count, "predicted": predicted,
                                "observed": observed})
    counts, edges = torch.histogram(m, bins=20)
    result = {"accuracy": float(won.mean()),
              "loss": float(-F.logsigmoid(m - target.float()).mean()),
              "mean_margin": float(m.mean()), "margin_std": float(m.std()) if n > 1 else 0.0,
              "ece": ece, "samples": n,
              "margin_quantiles": dict(zip(("p10", "p25", "p50", "p75", "p90"), quantiles.tolist())),
              "margin_histogram": {"counts": [int(c) for c in counts], "edges": edges.tolist()},
              "calibration": calibration}
    if margins and all(v is not None for v in margins):
        given = torch.tensor(margins, dtype=torch.float)
        cuts = torch.quantile(given, torch.tensor([0.25, 0.5, 0.75])).tolist()
        bounds = [float(given.min()), *cuts, float(given.max())]
        rows = []
        for low, high in zip(bounds, bounds[1:]):
            inside = (given >= low) & (given <= high if high == bounds[-1] else given < high)
            if inside.any():
                rows.append({"low": low, "high": high, "pairs": int(inside.sum()),
                             "accuracy": float(won[inside].mean())})
        result["accuracy_by_data_margin"] = rows
    return result


# -- the task ---------------------------------------------------------------------------------------------------

class RewardModel(Task):
    """A scalar reward per text (or per answer to a prompt), learned from preference pairs."""

    NAME = "reward_model"
    METRICS = ["accuracy", "loss", "mean_margin", "ece"]
    HEADLINE = ("accuracy", "mean_margin")
    EARLY_STOPPING = ("accuracy", "max")
    MODEL_CLASS = AutoModelForSequenceClassification
    PEFT_TASK_TYPE = "SEQ_CLS"

    LEGACY_SETTINGS = "reward_model"
    Settings = RewardModelSettings
    BUNDLED = BundledSets(BUNDLED_PAIRS, bundled_pairs_split, "pair set")

    # -- data ------------------------------------------------------------------------------------------------
    def load_data(self, cfg) -> TaskData:
        parts, description = task_splits(cfg, lambda path: read_pairs(path, cfg.columns), BUNDLED_PAIRS,
                                         bundled_pairs_split,
                                         "preference pair",
                                         describe_pairs(cfg.dataset) if cfg.dataset in BUNDLED_PAIRS else "")
        return TaskData(parts["train"], parts["validation"], parts["test"], columns=Columns("chosen", None),
                        description=description)

    def read_file(self, path: str, meta: dict, fmt: str) -> list[PreferencePair]:
        return read_pairs(path, meta.get("columns"))

    def training_texts(self, pairs: list[PreferencePair]):
        for p in pairs:
            yield from (p.chosen, p.rejected)
            if p.prompt:
                yield p.prompt if isinstance(p.prompt, str) else " ".join(m["content"] for m in p.prompt)

    def options(self, config) -> dict:
        return {"reward_model": self.settings.model_dump(exclude={"name"}), "text_column": "chosen",
                "label_column": None}

    def check_config(self, config) -> None:
        super().check_config(config)
        train = config.train
        for key, on in (("train.label_smoothing", train.label_smoothing), ("train.rdrop.alpha", train.rdrop.alpha),
                        ("train.adversarial.method", train.adversarial.method != "none"),
                        ("model.long_documents", config.model.long_documents != "truncate")):
            if on:
                raise ConfigError(f"{key}: not offered for task reward_model (it is a classification setting)")

    def encode(self, tokenizer, pairs: list[PreferencePair], meta: dict, label_map=None) -> PairEncoded:
        """Both rows of every pair, tokenized once. A pair with a row longer than max_length stops the run,
        is dropped or is cut (task.overlong), and is counted either way."""
        ensure_pad_token(tokenizer)
        opts, max_len = meta["reward_model"], meta["max_length"]
        items = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
        ids, types, lengths = tokenize_rows(tokenizer, items, max_len)
        n = len(pairs)
        keep, over = [], 0
        for i, pair in enumerate(pairs):
            longest = max(lengths[i], lengths[n + i])
            if longest > max_len:
                over += 1
                refuse_overlong(opts["overlong"], "task.overlong", pair, longest, max_len)
                if opts["overlong"] == "drop":
                    continue
            keep.append(i)
        if over:
            log.warning("%d of %d pairs are longer than max_length=%d: %s", over, n, max_len,
                        {"drop": "dropped", "truncate": "cut"}[opts["overlong"]])
        scale = opts["margin_scale"]
        return PairEncoded(
            [ids[i] for i in keep], [types[i] for i in keep] if types else None,
            [scale * (pairs[i].margin or 0.0) for i in keep], over, sample=keep,
            options={"overlong": opts["overlong"]},
            rejected_ids=[ids[n + i] for i in keep], rejected_types=[types[n + i] for i in keep] if types else None,
            margins=[pairs[i].margin for i in keep])

    # -- model -----------------------------------------------------------------------------------------------
    def build_model(self, base, label_map=None, dropout: float | None = None):
        from ..models import instantiate

        model = instantiate(AutoModelForSequenceClassification, base, REWARD, dropout)
        tokenizer = getattr(base, "tokenizer", None)
        if model.config.pad_token_id is None and tokenizer is not None:
            ensure_pad_token(tokenizer)
            model.config.pad_token_id = tokenizer.pad_token_id  # a decoder's head finds the last token by it
        return model

    # -- training --------------------------------------------------------------------------------------------
    def collate(self, enc: PairEncoded, indices: list[int], pad_id: int, multiple: int = 1) -> dict[str, torch.Tensor]:
        """2B rows (the B chosen, then the B rejected) in one batch; `labels`: the B margins the loss subtracts."""
        batch = collate(enc.rows(indices), list(range(2 * len(indices))), pad_id, multiple)
        batch["labels"] = torch.tensor([enc.labels[i] for i in indices], dtype=torch.float)
        return batch

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["labels"].numel())

    def loss_sum(self, outputs, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rewards = outputs.logits.squeeze(-1)
        n = batch["labels"].numel()
        return bradley_terry_loss_sum(rewards[:n], rewards[n:], batch["labels"])

    # -- inference and evaluation ----------------------------------------------------------------------------
    def infer(self, model, enc: PairEncoded, batch_size: int, pad_id: int, device: torch.device, dtype=None,
              rank: int = 0, world: int = 1, gather=None) -> torch.Tensor:
        """The rewards of every pair's chosen and rejected row: [N, 2]."""
        rewards = predict_logits(model, enc.rows(), batch_size, pad_id, device, dtype, rank, world, gather)
        return rewards.reshape(2, -1).T if len(enc) else torch.zeros(0, 2)

    def evaluate(self, scores: torch.Tensor, enc: PairEncoded, label_map=None) -> dict:
        return pair_metrics(scores, torch.tensor(enc.labels, dtype=torch.float), enc.margins)

    def prediction_rows(self, pairs: list[PreferencePair], scores, enc: PairEncoded, label_map=None) -> list[dict]:
        rows = []
        for i, (chosen, rejected) in zip(enc.sample, scores.tolist()):
            p = pairs[i]
            rows.append({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected,
                         **({"margin": p.margin} if p.margin is not None else {}),
                         "reward_chosen": round(chosen, 6), "reward_rejected": round(rejected, 6),
                         "correct": chosen > rejected})
        return rows

    def predict(self, trained, inputs: list[str | dict], batch_size: int, dtype, warn: bool = True) -> list[dict]:
        """The reward of each text; of a {"prompt", "text"} record's text as the answer to its prompt. A raw text
        `PROMPT<TAB>ANSWER` is the answer after the first tab to the prompt before it (`tunecraft predict`).
        Texts longer than max_length are cut (each result says so; `warn` says how many on the terminal)."""
        rows = [item if isinstance(item, dict) else _tab_record(item) for item in inputs]
        prompts, texts = [r.get("prompt") or "" for r in rows], [r["text"] for r in rows]
        tokenizer, max_len = trained.tokenizer, trained.meta["max_length"]
        ensure_pad_token(tokenizer)
        ids, types, lengths = tokenize_rows(tokenizer, list(zip(prompts, texts)), max_len)
        cut = [n > max_len for n in lengths]
        if warn and any(cut):
            log.warning("%d of %d texts are longer than max_length=%d tokens: they are cut", sum(cut), len(cut),
                        max_len)
        device = next(trained.model.parameters()).device  # where the caller put it (a policy's GPU, say)
        rewards = predict_logits(trained.model, Encoded(ids, types, None, sum(cut)), batch_size,
                                 tokenizer.pad_token_id, device, dtype)
        return [{**({"prompt": p} if p else {}), "text": t, "reward": float(r), "truncated": c}
                for p, t, r, c in zip(prompts, texts, rewards.reshape(-1).tolist(), cut)]


def _tab_record(text: str) -> dict:
    """`PROMPT<TAB>ANSWER` as {"prompt", "text"}; a text without a tab is an answer to no prompt."""
    prompt, answer = text.split("\t", 1) if "\t" in text else ("", text)
    return {"prompt": prompt, "text": answer}


def read_pairs(path, columns: dict | None = None) -> list[PreferencePair]:
    """A JSONL file of preference pairs; plain-text pairs may have no prompt (each text is then scored alone)."""
    return read_preference_file(path, "pairs", prompt_required=False, columns=columns)

