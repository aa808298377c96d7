"""Offline preference optimisation (DPO, IPO, SimPO, ORPO, KTO) of a causal LM on the one training loop: pairs or
judged answers in, the losses of align/losses.py, reference log-probs computed once before the first step and
cached in the run folder, held-out implicit-reward accuracy. The trained run is a causal LM: predict is the
causal_lm task's, inherited; chat and the OpenAI routes are registered for it as for causal_lm (chat.py,
serve/routes/)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from safetensors.torch import load_file, save_file

from ..align import losses
from ..align.logprobs import encode_completions, pad_rows, reference_of, sequence_logprobs
from ..data.chat import Conversation
from ..data.dataset import Encoded, TaskData, refuse_overlong, task_splits
from ..data.preferences import (
    PreferencePair,
    as_judgements,
    read_feedback_store,
    read_preference_file,
    render_completion,
    render_prompt,
)
from ..data.readers import Columns
from ..errors import ConfigError, TunecraftError
from ..io import write_file
from ..runtime.inference import autocast_context, rows_in_input_order
from .base import TaskSettings
from .causal_lm import CausalLM, GenerationSettings

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference_logps.safetensors"
FREE_OF_REFERENCE = ("simpo", "orpo")
"""Objectives without a reference model: no reference pass."""
FEEDBACK_SUFFIXES = (".sqlite", ".db")


@dataclass
class PreferenceEncoded(Encoded):
    """Two rows per example: chosen and rejected answers (pairs), or for KTO the judged answer and a mismatched
    one (the answer of another prompt, for KTO's reference point). `input_ids` holds the first rows."""

    second_ids: list[list[int]] = field(default_factory=list)
    masks: list[list[int]] = field(default_factory=list)
    second_masks: list[list[int]] = field(default_factory=list)
    desirable: list[bool] | None = None
    """KTO: whether each judged answer is good; None for pairs."""
    paired: bool = False
    """KTO rows that come two by two from pairs (chosen, rejected): scored pairwise."""
    reference: torch.Tensor | None = None
    """[N, 2] reference log-probs of both rows, attached by `before_training` (or on evaluation)."""

    @property
    def lengths(self) -> list[int]:
        return [max(len(a), len(b)) for a, b in zip(self.input_ids, self.second_ids)]


def read_preference_data(path: str, kind: str, good_rating: int, columns: dict | None = None) -> list:
    """A JSONL file of pairs or judged answers, or a server's feedback store (RUN/feedback.sqlite)."""
    if Path(path).suffix.lower() in FEEDBACK_SUFFIXES:
        return read_feedback_store(path, good_rating)
    return read_preference_file(path, kind, columns=columns)


def _sources(examples: list) -> str:
    """Where examples came from: each file with its line (row id) numbers."""
    by_file: dict[str, list[int]] = {}
    for e in examples:
        by_file.setdefault(e.path, []).append(e.line)
    return "; ".join(f"{p}: {len(lines)} rows" for p, lines in by_file.items())


class PreferenceSettings(TaskSettings):
    """Offline preference optimisation: the objective (its constants are TRL's, align/losses.py), how the data
    is read (JSONL pairs or judged answers, data/preferences.py, or a server's feedback store,
    RUN/feedback.sqlite), and how the trained causal LM generates."""

    name: Literal["preference"] = "preference"
    LEGACY = {"preference": "", "data.preference": "", "generation": "generation"}
    objective: Literal["dpo", "ipo", "simpo", "orpo", "kto"] = "dpo"
    beta: float = Field(0.1, gt=0.0)
    """DPO/IPO/KTO: the strength of the pull toward the reference (IPO's τ); SimPO: the reward scale."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    """DPO only: the probability that a pair's label is flipped (conservative DPO)."""
    simpo_gamma: float = Field(0.5, ge=0.0)
    """SimPO: the target reward margin γ."""
    orpo_lambda: float = Field(0.1, gt=0.0)
    """ORPO: the weight λ of the odds-ratio term beside the chosen answer's NLL."""
    kto_desirable_weight: float = Field(1.0, gt=0.0)
    kto_undesirable_weight: float = Field(1.0, gt=0.0)
    kind: Literal["auto", "pairs", "judgements"] = "auto"
    """pairs (prompt/chosen/rejected) or judgements (prompt/completion/label); auto: told by each file."""
    overlong: Literal["error", "drop", "truncate"] = "drop"
    """A prompt + answer longer than model.max_length: stop with its file and line, drop the example (counted in
    the log and summary.json), or cut the prompt's start (the whole answer is kept)."""
    good_rating: int = 1
    """Feedback stores: a rating at or above this is a good answer, below it a bad one (1 for thumbs -1/1; 4 for
    a 1..5 scale)."""
    generation: GenerationSettings = GenerationSettings()


class Preference(CausalLM):
    """A causal LM trained on preferences. The objective's constants are this run's settings (the recipe's
    `task:`, or for a trained run its tunecraft.json "preference")."""

    NAME = "preference"
    METRICS = ["accuracy", "margin", "loss", "chosen_logps", "rejected_logps"]
    HEADLINE = ("accuracy", "margin")
    EARLY_STOPPING = ("accuracy", "max")

    LEGACY_SETTINGS = "preference"
    LEGACY_KEYS = None
    Settings = PreferenceSettings
    BUNDLED = None

    # -- data ------------------------------------------------------------------------------------------------
    def check_config(self, config) -> None:
        super().check_config(config)
        train = config.train
        if train.label_smoothing or train.rdrop.alpha or train.adversarial.method != "none":
            raise ConfigError("train.label_smoothing, train.rdrop and train.adversarial act on a classifier's "
                              "logits; task preference takes none of them (task.label_smoothing smooths DPO)")
        if self.settings.label_smoothing and self.settings.objective != "dpo":
            raise ConfigError("task.label_smoothing: conservative DPO; the objective is "
                              f"{self.settings.objective}")

    def load_data(self, cfg) -> TaskData:
        opts = self.settings

        def read(path):
            return read_preference_data(path, opts.kind, opts.good_rating, cfg.columns)

        parts, description = task_splits(cfg, read, {}, None, "preference", "")
        description += " (" + _sources(parts["train"]) + ")"
        feedback = [e for e in parts["train"] if Path(e.path).suffix.lower() in FEEDBACK_SUFFIXES]
        if feedback:  # which rows of the store became which kind of example (DPO and the like learn from pairs)
            pairs = sorted(e.line for e in feedback if isinstance(e, PreferencePair))
            judged = sorted(e.line for e in feedback if not isinstance(e, PreferencePair))
            description += f"; feedback rows as pairs {pairs}, as judged answers {judged}"
        return TaskData(parts["train"], parts["validation"], parts["test"], columns=Columns("prompt", None),
                        description=description)

    def load_eval_examples(self, spec: str, meta: dict, fmt_name: str, split: str, seed: int, fractions) -> list:
        if not Path(spec).exists():
            raise TunecraftError(f"'{spec}' is not a file of preference pairs or judged answers")
        return self.read_file(spec, meta, fmt_name)

    def read_file(self, path: str, meta: dict, fmt: str) -> list:
        opts = meta["preference"]
        return read_preference_data(path, opts["kind"], opts["good_rating"], meta.get("columns"))

    def options(self, config) -> dict:
        return {"generation": self.settings.generation.model_dump(), "text_column": "prompt", "label_column": None,
                "preference": self.settings.model_dump(exclude={"name", "generation"})}

    def training_texts(self, examples: list):
        for e in examples:
            prompt = e.prompt if isinstance(e.prompt, str) else " ".join(m["content"] for m in e.prompt)
            yield " ".join([prompt, *((e.chosen, e.rejected) if isinstance(e, PreferencePair) else (e.completion,))])

    # -- encoding --------------------------------------------------------------------------------------------
    def encode(self, tokenizer, examples: list, meta: dict, label_map=None) -> PreferenceEncoded:
        """Two rows per example (module docstring). An example with a row longer than max_length is an error,
        dropped, or cut at its prompt's start (task.overlong), counted in `truncated` either way.
        KTO takes pairs as two judged answers; the pairwise objectives cannot learn from judged answers alone."""
        opts = meta["preference"]
        max_len, policy = meta["max_length"], opts["overlong"]
        kto = opts["objective"] == "kto"
        items, paired = self._items(examples, opts["objective"])
        first = [(e, e.chosen if isinstance(e, PreferencePair) else e.completion) for e in items]
        rows1, masks1, over = self._rows(tokenizer, first, max_len, policy)
        if not kto:
            rows2, masks2, over2 = self._rows(tokenizer, [(e, e.rejected) for e in items], max_len, policy)
            over = [a or b for a, b in zip(over, over2)]
        elif paired:  # a pair is kept or dropped whole
            over = [over[i] or over[i ^ 1] for i in range(len(over))]
        keep = [i for i in range(len(items)) if not (over[i] and policy == "drop")]
        if sum(over):
            log.warning("%d of %d preference examples are longer than max_length=%d: %s", sum(over), len(items),
                        max_len, {"drop": "dropped", "truncate": "cut at the prompt's start"}[policy])
        if not keep:
            raise TunecraftError(f"no preference example fits in model.max_length={max_len}")
        if kto:
            # KTO's mismatched answers: each kept example's prompt with the answer of the one before it (of the
            # pair before it, for paired data, so that a pair's answers never stand in for each other); cut at
            # the prompt's start when too long, as they only estimate the reference point
            shift = 2 if paired else 1
            answers = [first[i][1] for i in keep]
            mismatched = [(items[i], answers[(k - shift) % len(keep)]) for k, i in enumerate(keep)]
            second, second_masks, _ = self._rows(tokenizer, mismatched, max_len, "truncate")
        else:
            second, second_masks = [rows2[i] for i in keep], [masks2[i] for i in keep]
        return PreferenceEncoded(
            [rows1[i] for i in keep], None, None, sum(over), sample=keep,
            options={"overlong": policy, "pad_id": tokenizer.pad_token_id, "base_model": meta["base_model"]},
            second_ids=second, masks=[masks1[i] for i in keep], second_masks=second_masks,
            desirable=[items[i].desirable for i in keep] if kto else None, paired=paired)

    @staticmethod
    def _items(examples: list, objective: str) -> tuple[list, bool]:
        """What an objective learns from: pairs, or for KTO judged answers (pairs split in two); and whether
        KTO's answers all come from pairs."""
        pairs = [e for e in examples if isinstance(e, PreferencePair)]
        if objective == "kto":
            return [j for e in examples for j in (as_judgements([e]) if isinstance(e, PreferencePair) else [e])], \
                len(pairs) == len(examples)
        if not pairs:
            raise ConfigError(f"task.objective {objective} learns from pairs (prompt, chosen, rejected); "
                              "the data holds judged answers only: use objective kto")
        if len(pairs) < len(examples):
            log.warning("%d judged answers without a pair are left out: %s learns from pairs only",
                        len(examples) - len(pairs), objective)
        return pairs, False

    @staticmethod
    def _rows(tokenizer, items: list[tuple], max_len: int, policy: str):
        """(example, answer) → prompt + answer ids, completion masks, and whether each was longer than max_len
        (an error under policy "error"; cut at the prompt's start under "truncate")."""
        prompts = [render_prompt(tokenizer, e.prompt) for e, _ in items]
        answers = [render_completion(tokenizer, e.prompt, a) for e, a in items]
        ids, masks, _ = encode_completions(tokenizer, prompts, answers, 10**9)
        over = [len(r) > max_len for r in ids]
        for i in (i for i, o in enumerate(over) if o):
            refuse_overlong(policy, "task.overlong", items[i][0], len(ids[i]), max_len,
                            " (prompt and answer)")
            if policy == "truncate":
                cut, cut_masks, _ = encode_completions(tokenizer, [prompts[i]], [answers[i]], max_len)
                ids[i], masks[i] = cut[0], cut_masks[0]
        return ids, masks, over

    # -- training --------------------------------------------------------------------------------------------
    def collate(self, enc: PreferenceEncoded, indices: list[int], pad_id: int, multiple: int = 1) -> dict:
        return collate_pairs(enc, indices, pad_id, multiple)

    def model_inputs(self, batch: dict) -> dict:
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def count(self, batch: dict) -> int:
        return batch["input_ids"].shape[0] // 2  # pairs; for KTO, judged answers

    def loss_sum(self, outputs, batch: dict) -> torch.Tensor:
        logps, tokens = sequence_logprobs(outputs.logits, batch["input_ids"], batch["completion_mask"])
        return self.losses(logps, tokens, batch.get("reference"), batch.get("desirable")).sum()

    def losses(self, logps: torch.Tensor, tokens: torch.Tensor, reference: torch.Tensor | None,
               desirable: torch.Tensor | None) -> torch.Tensor:
        """One loss per example from the log-probs and token counts of its two rows (first B, then second B)."""
        s = self.settings
        first, second = logps.chunk(2)
        n1, n2 = tokens.chunk(2)
        objective = s.objective
        if objective == "simpo":
            return losses.simpo(first, second, n1, n2, s.beta, s.simpo_gamma)
        if objective == "orpo":
            return losses.orpo(first, second, n1, n2, s.orpo_lambda)
        if reference is None:
            raise TunecraftError(f"{objective} needs the reference log-probs (before_training computes them)")
        ref1, ref2 = reference[:, 0].to(first.device), reference[:, 1].to(first.device)
        if objective == "dpo":
            return losses.dpo(first, second, ref1, ref2, s.beta, s.label_smoothing)
        if objective == "ipo":
            return losses.ipo(first, second, ref1, ref2, n1, n2, s.beta)
        kl = losses.kto_kl(second, ref2)
        return losses.kto(first, ref1, desirable.to(first.device), kl, s.beta, s.kto_desirable_weight,
                          s.kto_undesirable_weight)

    # -- the reference, once -----------------------------------------------------------------------------------
    def before_training(self, model, splits: dict, session) -> None:
        """Reference log-probs of every split's rows, computed once with the model before its first step (an
        adapter method's base with the adapter off; the untouched weights otherwise) and cached in the run
        folder; a resumed run reads them back. The reference model is not kept."""
        if self.settings.objective in FREE_OF_REFERENCE:
            return
        path = session.run_dir / REFERENCE_FILE
        present = {name: enc for name, enc in splits.items() if enc is not None and len(enc)}
        cached = load_file(str(path)) if session.resume and path.is_file() else {}
        if cached:
            for name, enc in present.items():
                if name not in cached or len(cached[name]) != len(enc):
                    raise TunecraftError(f"{path}: no reference log-probs for the {len(enc)} {name} examples; the "
                                         "data changed since the run started")
        else:
            batch_size = session.config.train.batch_size * 2
            cached = {name: reference_logprobs(model, enc, batch_size, enc.options["pad_id"], session.acc.device,
                                               session.dtype) for name, enc in present.items()}
            if session.acc.is_main_process:
                write_file(path, lambda tmp: save_file({k: v.contiguous() for k, v in cached.items()}, str(tmp)))
            session.acc.wait_for_everyone()
        for name, enc in present.items():
            enc.reference = cached[name]

    # -- held-out scoring --------------------------------------------------------------------------------------
    @torch.no_grad()
    def infer(self, model, enc: PreferenceEncoded, batch_size: int, pad_id: int, device, dtype=None, rank: int = 0,
              world: int = 1, gather=None) -> torch.Tensor:
        """Per example [first log-prob, second log-prob, their token counts, their reference log-probs]: [N, 6].
        A split without reference log-probs from `before_training` (`tunecraft eval`, the base model before
        training) is scored against the run's base model, loaded for it."""
        if enc.reference is None and self.settings.objective not in FREE_OF_REFERENCE:
            enc.reference = base_reference(enc, batch_size, pad_id, device, dtype)
        scores = score_rows(model, enc, batch_size, pad_id, device, dtype, rank, world, gather)
        ref = enc.reference.float() if enc.reference is not None else scores[:, 0:2]
        return torch.cat([scores, ref], 1)

    def rewards(self, scores: torch.Tensor) -> torch.Tensor:
        """The implicit reward of each row [N, 2]: β·log(π/π_ref) (DPO, IPO, KTO), β·mean token log-prob (SimPO),
        λ·mean token log-prob (ORPO, as TRL logs it)."""
        s = self.settings
        logps, tokens, ref = scores[:, 0:2], scores[:, 2:4].clamp(min=1), scores[:, 4:6]
        if s.objective == "simpo":
            return s.beta * logps / tokens
        if s.objective == "orpo":
            return s.orpo_lambda * logps / tokens
        return s.beta * (logps - ref)

    def evaluate(self, scores: torch.Tensor, enc: PreferenceEncoded, label_map=None) -> dict:
        """Implicit-reward accuracy (a tie counts half, so a model that is its own reference scores 0.5): of
        chosen over rejected for pairs (KTO: the pair's two judged answers), of the reward's sign for judged
        answers; the mean margin; the held-out loss; the mean log-probs of chosen and rejected answers (KTO:
        good and bad ones)."""
        r = self.rewards(scores)
        if enc.desirable is None:
            chosen, rejected = r[:, 0], r[:, 1]
            chosen_logps, rejected_logps = scores[:, 0], scores[:, 1]
            loss = self.losses(torch.cat([scores[:, 0], scores[:, 1]]), torch.cat([scores[:, 2], scores[:, 3]]),
                               scores[:, 4:6], None)
        else:
            good = torch.tensor(enc.desirable)
            loss = self.losses(torch.cat([scores[:, 0], scores[:, 1]]), torch.cat([scores[:, 2], scores[:, 3]]),
                               scores[:, 4:6], good)
            chosen_logps, rejected_logps = scores[good, 0], scores[~good, 0]
            if enc.paired:
                chosen, rejected = r[0::2, 0], r[1::2, 0]
            else:
                signed = torch.where(good, r[:, 0], -r[:, 0])
                chosen, rejected = signed, torch.zeros_like(signed)
        wins = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
        out = {"accuracy": float(wins.mean()), "margin": float((chosen - rejected).mean()),
               "loss": float(loss.mean()), "chosen_logps": float(chosen_logps.mean()),
               "rejected_logps": float(rejected_logps.mean()) if len(rejected_logps) else float("nan"),
               "chosen_reward": float(chosen.mean()), "rejected_reward": float(rejected.mean()),
               "samples": len(enc)}
        if self.settings.objective not in FREE_OF_REFERENCE:
            out["chosen_logratio"] = float((scores[:, 0] - scores[:, 4]).mean())
        return out

    def prediction_rows(self, examples: list, scores: torch.Tensor, enc: PreferenceEncoded, label_map) -> list[dict]:
        items, _ = self._items(examples, self.settings.objective)
        r = self.rewards(scores)
        rows = []
        for k, (sample, s) in enumerate(zip(enc.sample, scores.tolist())):
            e = items[sample]
            row = {"prompt": e.prompt, "source": f"{e.path}:{e.line}"}
            if isinstance(e, PreferencePair):
                row.update(chosen=e.chosen, rejected=e.rejected, reward_chosen=round(float(r[k, 0]), 6),
                           reward_rejected=round(float(r[k, 1]), 6))
            else:
                row.update(completion=e.completion, desirable=e.desirable, reward=round(float(r[k, 0]), 6))
            row.update(logp_first=round(s[0], 4), logp_second=round(s[1], 4))
            rows.append(row)
        return rows

    # -- generation ----------------------------------------------------------------------------------------------
    def generation_eval(self, model, tokenizer, examples: list, gen: dict, dtype=None) -> dict:
        """The causal_lm task's generated answers (exact match, ROUGE-L against the chosen answer) on the held-out
        chat prompts, and the KL to the reference estimated on sampled answers (see `sampled_kl`)."""
        convs = []
        for e in examples:
            answer = e.chosen if isinstance(e, PreferencePair) else e.completion if e.desirable else None
            if answer is not None and not isinstance(e.prompt, str):
                convs.append(Conversation([*e.prompt, {"role": "assistant", "content": answer}]))
        out = super().generation_eval(model, tokenizer, convs, gen, dtype)
        if out and hasattr(model, "disable_adapter") and convs:
            prompts = [c.messages[:-1] for c in convs[: gen["eval_samples"]]]
            out.update(sampled_kl(model, tokenizer, prompts, gen, dtype))
        return out


def collate_pairs(enc: PreferenceEncoded, indices: list[int], pad_id: int, multiple: int = 1) -> dict:
    """The first rows of the examples, then their second rows, in one right-padded batch of 2B rows."""
    rows = [enc.input_ids[i] for i in indices] + [enc.second_ids[i] for i in indices]
    masks = [enc.masks[i] for i in indices] + [enc.second_masks[i] for i in indices]
    width = -(-max(len(r) for r in rows) // multiple) * multiple
    batch = {"input_ids": pad_rows([r + [pad_id] * (width - len(r)) for r in rows], pad_id),
             "attention_mask": pad_rows([[1] * len(r) + [0] * (width - len(r)) for r in rows], 0),
             "completion_mask": pad_rows([m + [0] * (width - len(m)) for m in masks], 0)}
    if enc.reference is not None:
        batch["reference"] = enc.reference[indices]
    if enc.desirable is not None:
        batch["desirable"] = torch.tensor([enc.desirable[i] for i in indices])
    return batch


# -- the reference and the KL ------------------------------------------------------------------------------------

@torch.no_grad()
def score_rows(model, enc: PreferenceEncoded, batch_size: int, pad_id: int, device, dtype=None, rank: int = 0,
               world: int = 1, gather=None) -> torch.Tensor:
    """[N, 4]: each example's two rows' summed completion log-probs and token counts, in input order."""
    model.eval()

    def batch_rows(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast_context(device, dtype):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logps, tokens = sequence_logprobs(logits, batch["input_ids"], batch["completion_mask"])
        return torch.cat([torch.stack(logps.chunk(2), 1), torch.stack(tokens.chunk(2), 1)], 1).cpu()

    return rows_in_input_order(enc, batch_size, device, lambda e, idx, m: collate_pairs(e, idx, pad_id, m),
                               batch_rows, 4, rank, world, gather)


@torch.no_grad()
def reference_logprobs(model, enc: PreferenceEncoded, batch_size: int, pad_id: int, device, dtype) -> torch.Tensor:
    """[N, 2] log-probs of each example's two rows under the reference: the model with its adapter off, or the
    model itself (called before any step)."""
    if hasattr(getattr(model, "module", model), "disable_adapter"):
        with reference_of(model) as ref:
            return score_rows(ref, enc, batch_size, pad_id, device, dtype)[:, 0:2].clone()
    was_training = model.training
    scores = score_rows(model, enc, batch_size, pad_id, device, dtype)
    model.train(was_training)
    return scores[:, 0:2].clone()


def base_reference(enc: PreferenceEncoded, batch_size: int, pad_id: int, device, dtype) -> torch.Tensor:
    """[N, 2] reference log-probs from the run's base model (tunecraft.json base_model), loaded for this."""
    from transformers import AutoModelForCausalLM

    from ..models import resolve_base

    name = enc.options["base_model"]
    log.info("scoring against the base model %s (no cached reference log-probs for this split)", name)
    base = AutoModelForCausalLM.from_pretrained(str(resolve_base(name)), dtype=torch.float32).to(device)
    return score_rows(base, enc, batch_size, pad_id, device, dtype)[:, 0:2].clone()


@torch.no_grad()
def sampled_kl(model, tokenizer, prompts: list[list[dict]], gen: dict, dtype=None, seed: int = 0) -> dict:
    """KL(π‖π_ref) on held-out prompts, estimated as the mean over one answer sampled from π per prompt
    (temperature 1, no top-k/top-p) of log π(y|x) − log π_ref(y|x), π_ref being the base with the adapter off."""
    model.eval()
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    ids_rows, masks = [], []
    for start in range(0, len(prompts), gen["batch_size"]):
        texts = [render_prompt(tokenizer, p) for p in prompts[start : start + gen["batch_size"]]]
        batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast_context(device, dtype):
            out = model.generate(**batch, max_new_tokens=gen["max_new_tokens"], do_sample=True, temperature=1.0,
                                 top_p=1.0, top_k=0, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        width = batch["input_ids"].shape[1]
        for row, prompt_mask in zip(out.tolist(), batch["attention_mask"].tolist()):
            prompt = [t for t, m in zip(row[:width], prompt_mask) if m]
            answer = row[width:]
            if tokenizer.eos_token_id in answer:  # up to and with the end of the answer
                answer = answer[: answer.index(tokenizer.eos_token_id) + 1]
            ids_rows.append(prompt + answer)
            masks.append([0] * len(prompt) + [1] * len(answer))
    total = {"policy": [], "reference": [], "tokens": []}
    for start in range(0, len(ids_rows), gen["batch_size"]):
        rows, row_masks = ids_rows[start : start + gen["batch_size"]], masks[start : start + gen["batch_size"]]
        ids = pad_rows(rows, tokenizer.pad_token_id).to(device)
        attention = pad_rows([[1] * len(r) for r in rows], 0).to(device)
        mask = pad_rows(row_masks, 0).to(device)
        with autocast_context(device, dtype):
            policy, tokens = sequence_logprobs(model(input_ids=ids, attention_mask=attention).logits, ids, mask)
            with reference_of(model) as ref:
                reference, _ = sequence_logprobs(ref(input_ids=ids, attention_mask=attention).logits, ids, mask)
        total["policy"] += policy.tolist()
        total["reference"] += reference.tolist()
        total["tokens"] += tokens.tolist()
    diff = [p - r for p, r in zip(total["policy"], total["reference"])]
    return {"kl": sum(diff) / len(diff), "kl_per_token": sum(diff) / max(sum(total["tokens"]), 1),
            "kl_prompts": len(diff)}

