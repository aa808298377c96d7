"""Online RL from reward functions (task: rl): GRPO (Shao et al. 2024, DeepSeekMath) and RLOO (Ahmadian et al.
2024) on the one training loop.

Before each step (`prepare`) the policy samples k completions per prompt in one batched `generate` (KV cache,
prompts left-padded); the reward functions (align/rewards.py) score them; the advantages are group-relative; the
loss is the clipped objective with a per-token KL penalty to the reference, the base with the adapter off
(align/logprobs.py `reference_of`). Held-out prompts are scored by mean reward, KL to the reference, perplexity
of the completions under the reference and distinct-n. A run exports a causal LM, so chat, predict and serve work
on it as on a causal_lm run (the routes and chat are registered for it as for causal_lm).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..align.logprobs import completion_token_logprobs, pad_rows, reference_of, token_logprobs
from ..align.rewards import ExactReward, Reward, build_rewards, score
from ..align.settings import RlConfig
from ..assets import VADER_FILES
from ..data import LabelMap
from ..data.bundled import read_vader
from ..data.dataset import BundledSets, Encoded, TaskData, seeded_split, task_splits
from ..data.preferences import PromptRow, read_prompt_file, render_prompt
from ..data.readers import Columns
from ..errors import ConfigError, DataError
from ..runtime.inference import autocast_context
from .base import TaskSettings, records
from .causal_lm import SFT_KEYS, CausalLM, CausalLMSettings, GenerationSettings

OPENING_WORDS = 5
"""A bundled sentiment set's prompts are its sentences' first five words."""
REFERENCE_METHODS = ("lora", "adalora", "ia3")
"""Methods whose model is a PEFT model, so that the base with the adapter off is the reference (no second copy)."""


# -- data -------------------------------------------------------------------------------------------------------

def openings(sentences: list[str], words: int = OPENING_WORDS) -> list[str]:
    """The first `words` words of each sentence longer than that, each opening once, in order."""
    out = {}
    for text in sentences:
        parts = text.split()
        if len(parts) > words:
            out.setdefault(" ".join(parts[:words]), None)
    return list(out)


def bundled_split(name: str, seed: int, fractions: tuple[float, float]) -> dict[str, list[PromptRow]]:
    """Openings of a bundled sentiment set's sentences, split as task: classification splits the sentences
    (the same seed and fractions give the same test sentences, so a classifier trained on that set never saw a
    held-out prompt's sentence). An opening also found in a held-out split is left out of the earlier ones."""
    test, validation, train = seeded_split(read_vader(name), [fractions[1], fractions[0]], seed)
    parts, seen = {}, set()
    for split, sentences in (("test", test), ("validation", validation), ("train", train)):
        kept = [o for o in openings([e.text for e in sentences]) if o not in seen]
        seen.update(kept)
        parts[split] = [PromptRow(o, None, f"{name}:{split}", i + 1) for i, o in enumerate(kept)]
    return parts


BUNDLED_PROMPTS = {name: name for name in VADER_FILES}


class RlSettings(RlConfig, TaskSettings):
    """Online RL: the algorithm and its reward functions (align/settings.py `RlConfig`), and how the trained
    causal LM generates when it is evaluated as one, predicts and chats."""

    name: Literal["rl"] = "rl"
    LEGACY = {"rl": "", "generation": "generation"}
    generation: GenerationSettings = GenerationSettings()


def prompt_display(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


# -- rollouts ---------------------------------------------------------------------------------------------------

@dataclass
class Rollouts:
    """What sampling and scoring need, shared by a split's batches (kept in its Encoded.options)."""

    tokenizer: object
    rows: list[PromptRow]
    rewards: list[Reward]
    settings: dict


@dataclass(frozen=True)
class LossSettings:
    epsilon: float
    beta: float
    loss_type: str
    temperature: float


def left_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids, mask


@torch.no_grad()
def sample(model, tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int, max_new_tokens: int,
           temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """k completions of each left-padded prompt in one batched `generate` call (KV cache): → (completion ids
    [P·k, T], completion mask: 1 through each row's first end-of-sequence token, 0 after). Pure sampling from the
    policy at `temperature` (no top-k/top-p), so the log-probs below are those of the sampler."""
    ids, mask = input_ids.repeat_interleave(k, 0), attention_mask.repeat_interleave(k, 0)
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature, top_k=0,
                         top_p=1.0, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    completion = out[:, ids.shape[1]:]
    is_eos = (completion == tokenizer.eos_token_id).long()
    after_eos = (is_eos.cumsum(1) - is_eos) > 0
    return completion, (~after_eos).long()


def joined(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion: torch.Tensor,
           completion_mask: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded rows of each prompt followed by its completion (the training forward's input), with the
    mask of the completion's tokens."""
    ids, marks = [], []
    for p, pm, c, cm in zip(prompt_ids.tolist(), prompt_mask.tolist(), completion.tolist(), completion_mask.tolist()):
        prompt = [t for t, m in zip(p, pm) if m]
        answer = [t for t, m in zip(c, cm) if m]
        ids.append(prompt + answer)
        marks.append([0] * len(prompt) + [1] * len(answer))
    return {"input_ids": pad_rows(ids, pad_id), "attention_mask": pad_rows([[1] * len(r) for r in ids], 0),
            "completion_mask": pad_rows(marks, 0)}


def group_advantages(rewards: torch.Tensor, k: int, algorithm: str) -> torch.Tensor:
    """Each completion's reward against its group of k (one prompt's completions, consecutive rows).
    grpo: (r − mean) / (std + 1e-4), the unbiased std as in TRL's GRPOTrainer (Shao et al. 2024, §4.1.2);
    rloo: r − the mean of the other k − 1 (Ahmadian et al. 2024, the leave-one-out baseline)."""
    groups = rewards.view(-1, k)
    if algorithm == "grpo":
        advantages = (groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + 1e-4)
    else:
        advantages = groups - (groups.sum(1, keepdim=True) - groups) / (k - 1)
    return advantages.reshape(-1)


def per_token_loss(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor | None,
                   advantages: torch.Tensor, epsilon: float, beta: float) -> torch.Tensor:
    """GRPO's per-token objective, negated (Shao et al. 2024, eq. 3, as TRL 1.16's GRPOTrainer computes it):
    −min(ρ·A, clip(ρ, 1−ε, 1+ε)·A) + β·KL, with ρ = π/π_old per token and the k3 estimator of the KL to the
    reference, KL = π_ref/π − log(π_ref/π) − 1 (unbiased, never negative)."""
    ratio = torch.exp(logps - old_logps)
    adv = advantages.unsqueeze(1)
    loss = -torch.min(ratio * adv, ratio.clamp(1 - epsilon, 1 + epsilon) * adv)
    if beta and ref_logps is not None:
        delta = ref_logps - logps
        loss = loss + beta * (torch.exp(delta) - delta - 1)
    return loss


def summed_loss(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str) -> torch.Tensor:
    """The loss summed over its count's terms: grpo, each completion's token mean (terms: completions); dapo, every
    completion token (terms: tokens). Divided by the step's count, these are TRL's loss_type grpo and dapo."""
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).sum()
    return (per_token * mask).sum()


@contextlib.contextmanager
def reference(model):
    """The reference: the base with the adapter off; a model without an adapter (the base model before training)
    is its own."""
    if hasattr(getattr(model, "module", model), "disable_adapter"):
        with reference_of(model) as ref:
            yield ref
    else:
        with torch.no_grad():
            yield model


def distinct(texts: list[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): distinct word n-grams over all n-grams of the completions (lower-cased)."""
    grams = [tuple(words[i : i + n]) for t in texts for words in [t.lower().split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


# -- the task ---------------------------------------------------------------------------------------------------

class ReinforcementLearning(CausalLM):
    """Online RL of a causal LM against reward functions (GRPO / RLOO); exported and served as a causal LM."""

    NAME = "rl"
    METRICS = ["reward", "kl", "ref_perplexity", "distinct_1", "distinct_2"]
    HEADLINE = ("reward", "kl")
    EARLY_STOPPING = ("reward", "max")

    LEGACY_SETTINGS = "rl"
    LEGACY_KEYS = None
    Settings = RlSettings
    BUNDLED = BundledSets(BUNDLED_PROMPTS, bundled_split, "sentiment set")

    # -- data ---------------------------------------------------------------------------------------------------
    def load_data(self, cfg) -> TaskData:
        parts, description = task_splits(cfg, lambda path: read_prompt_file(path, cfg.columns), BUNDLED_PROMPTS,
                                         bundled_split,
                                         "sentiment",
                                         f"first {OPENING_WORDS} words of each sentence, split as classification "
                                         "splits the sentences")
        return TaskData(parts["train"], parts["validation"], parts["test"], columns=Columns("prompt", None),
                        description=description)

    def read_file(self, path: str, meta: dict, fmt: str) -> list[PromptRow]:
        return read_prompt_file(path, meta.get("columns"))

    def options(self, config) -> dict:
        return {"sft": CausalLMSettings().model_dump(include=set(SFT_KEYS)),
                "generation": self.settings.generation.model_dump(), "text_column": "prompt", "label_column": None,
                "rl": self.settings.model_dump(exclude={"name", "generation"})}

    def check_config(self, config) -> None:
        super().check_config(config)
        if config.method.name not in REFERENCE_METHODS:
            raise ConfigError(f"method: task rl needs an adapter method ({', '.join(REFERENCE_METHODS)}): the "
                              f"reference is the base with the adapter off; got '{config.method.name}'")
        t = config.train
        if t.label_smoothing or t.rdrop.alpha or t.adversarial.method != "none":
            raise ConfigError("train: label_smoothing, rdrop and adversarial read class labels; task rl has none")
        if config.model.max_length <= self.settings.max_new_tokens:
            raise ConfigError(f"task.max_new_tokens: {self.settings.max_new_tokens} leaves no room for the prompt in "
                              f"model.max_length={config.model.max_length}")
        # a missing run folder, an unknown label...: refused before any work
        build_rewards(self.settings.rewards, "task.rewards", predict_run=self.run_predictor)

    def training_texts(self, rows: list[PromptRow]):
        return (prompt_display(r.prompt) for r in rows)

    def encode(self, tokenizer, rows: list[PromptRow], meta: dict, label_map: LabelMap | None = None) -> Encoded:
        """Each prompt rendered (messages through the chat template's generation prompt) and tokenized; a prompt
        longer than max_length − task.max_new_tokens keeps its end, and is counted."""
        settings = meta["rl"]
        rewards = build_rewards(RlConfig.model_validate(settings).rewards, "task.rewards",
                                predict_run=self.run_predictor)
        if any(isinstance(r, ExactReward) for r in rewards):
            for row in rows:
                if row.answer is None:
                    raise DataError(row.path, row.line, "answer", "missing: the exact-answer reward needs it")
        room = meta["max_length"] - settings["max_new_tokens"]
        ids, cut = [], 0
        for row in rows:
            tokens = tokenizer(render_prompt(tokenizer, row.prompt), add_special_tokens=False)["input_ids"]
            if len(tokens) > room:
                cut += 1
                tokens = tokens[-room:]
            ids.append(tokens)
        return Encoded(ids, None, None, cut, sample=list(range(len(rows))),
                       options={"rollouts": Rollouts(tokenizer, rows, rewards, settings)})

    # -- training -----------------------------------------------------------------------------------------------
    def collate(self, enc: Encoded, indices: list[int], pad_id: int, multiple: int = 1) -> dict:
        """The prompts, left-padded for generating, and what `prepare` samples and scores them with."""
        ids, mask = left_padded([enc.input_ids[i] for i in indices], pad_id)
        return {"input_ids": ids, "attention_mask": mask, "rollouts": (enc.options["rollouts"], indices)}

    def prepare(self, model, batch: dict) -> dict:
        """The rollouts: k completions per prompt (one generate call), their rewards and group advantages, and
        the reference's per-token log-probs; → right-padded prompt + completion rows with, under "labels", what
        the loss needs."""
        spec, indices = batch["rollouts"]
        s, tokenizer = spec.settings, spec.tokenizer
        device = next(model.parameters()).device
        prompt_ids, prompt_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        k = s["group_size"]
        was_training = model.training
        model.eval()
        try:
            completion, completion_mask = sample(model, tokenizer, prompt_ids, prompt_mask, k, s["max_new_tokens"],
                                                 s["temperature"])
        finally:
            model.train(was_training)
        rows = [spec.rows[i] for i in indices for _ in range(k)]
        texts = tokenizer.batch_decode(completion * completion_mask, skip_special_tokens=True)
        rewards, each = score(spec.rewards, [r.prompt for r in rows], texts, [r.answer for r in rows])
        out = joined(prompt_ids.repeat_interleave(k, 0), prompt_mask.repeat_interleave(k, 0), completion,
                     completion_mask, tokenizer.pad_token_id)
        out = {key: v.to(device) for key, v in out.items()}
        labels = {"completion_mask": out.pop("completion_mask"),
                  "advantages": group_advantages(rewards, k, s["algorithm"]).to(device),
                  "settings": LossSettings(s["epsilon"], s["beta"], s["loss_type"], s["temperature"]),
                  "reward_terms": {"reward": rewards, **({f"reward/{r.name}": torch.tensor(v, dtype=torch.float32)
                                                         for r, v in zip(spec.rewards, each)}
                                                      if len(spec.rewards) > 1 else {})}}
        if s["beta"]:
            with reference(model) as ref:
                labels["ref_logps"] = completion_token_logprobs(ref, out["input_ids"], out["attention_mask"],
                                                                s["temperature"])
        return {**out, "labels": labels}

    def count(self, batch: dict) -> int:
        t = batch["labels"]
        if t["settings"].loss_type == "grpo":
            return int(t["completion_mask"].shape[0])
        return int(t["completion_mask"][:, 1:].sum())

    def loss_sum(self, outputs, batch: dict) -> torch.Tensor:
        t = batch["labels"]
        s = t["settings"]
        logps = token_logprobs(outputs.logits, batch["input_ids"], s.temperature)
        # one optimizer step per rollout: π_old is the policy that sampled, numerically this one (ρ = 1, its
        # gradient is ∇log π), as TRL does when num_iterations is 1
        per_token = per_token_loss(logps, logps.detach(), t.get("ref_logps"), t["advantages"], s.epsilon, s.beta)
        t["policy_logps"] = logps.detach()  # kept with the batch for step_terms' KL (no second log-softmax)
        return summed_loss(per_token, t["completion_mask"][:, 1:].float(), s.loss_type)

    def step_terms(self, outputs, batch: dict) -> dict[str, tuple[float, int]]:
        """The rollouts' mean reward (and each reward function's, when there are several) and, when the loss has
        a reference (task.beta > 0), their KL to it: per completion the sum over its tokens of log π − log π_ref,
        as the held-out `kl`."""
        t = batch["labels"]
        terms = {name: (float(v.sum()), len(v)) for name, v in t["reward_terms"].items()}
        if t.get("ref_logps") is not None:
            with torch.no_grad():
                logps = t.get("policy_logps")
                if logps is None:  # step_terms without loss_sum first
                    logps = token_logprobs(outputs.logits.detach(), batch["input_ids"], t["settings"].temperature)
                kl = ((logps - t["ref_logps"]) * t["completion_mask"][:, 1:].float()).sum(dim=1)
            terms["kl"] = (float(kl.sum()), len(kl))
        return terms

    # -- held-out scoring ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def infer(self, model, enc: Encoded, batch_size: int, pad_id: int, device: torch.device, dtype=None,
              rank: int = 0, world: int = 1, gather=None) -> list[dict]:
        """rl.eval_samples completions per held-out prompt (seeded), each with its reward, its KL to the reference
        (the sum over its tokens of log π − log π_ref, an unbiased estimate of the sequence KL since the tokens
        are π's samples) and its negative log-likelihood under the reference."""
        spec = enc.options["rollouts"]
        s, tokenizer = spec.settings, spec.tokenizer
        n = s["eval_samples"]
        model.eval()
        rows = []
        forked = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=forked):
            torch.manual_seed(0)
            for start in range(rank * batch_size, len(enc), batch_size * world):
                indices = list(range(start, min(start + batch_size, len(enc))))
                ids, mask = (t.to(device) for t in left_padded([enc.input_ids[i] for i in indices], pad_id))
                with autocast_context(device, dtype):
                    completion, cmask = sample(model, tokenizer, ids, mask, n, s["max_new_tokens"], s["temperature"])
                    batch = joined(ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), completion, cmask,
                                   tokenizer.pad_token_id)
                    batch = {key: v.to(device) for key, v in batch.items()}
                    logps = completion_token_logprobs(model, batch["input_ids"], batch["attention_mask"],
                                                      s["temperature"])
                    with reference(model) as ref:
                        ref_logps = completion_token_logprobs(ref, batch["input_ids"], batch["attention_mask"],
                                                              s["temperature"])
                m = batch["completion_mask"][:, 1:].float()
                texts = tokenizer.batch_decode(completion * cmask, skip_special_tokens=True)
                prompts = [spec.rows[i] for i in indices for _ in range(n)]
                rewards, _ = score(spec.rewards, [p.prompt for p in prompts], texts, [p.answer for p in prompts])
                kl = ((logps - ref_logps) * m).sum(-1).tolist()
                nll = (-ref_logps * m).sum(-1).tolist()
                tokens = m.sum(-1).tolist()
                for j, text in enumerate(texts):
                    rows.append({"index": indices[j // n], "sample": j % n, "prompt": prompt_display(prompts[j].prompt),
                                 "completion": text, "reward": float(rewards[j]), "kl": kl[j], "ref_nll": nll[j],
                                 "tokens": int(tokens[j])})
        if world > 1 and gather is not None:
            rows = gather(rows)
        rows.sort(key=lambda r: (r["index"], r["sample"]))
        return rows

    def evaluate(self, scores: list[dict], enc: Encoded, label_map: LabelMap) -> dict:
        """Metrics of `infer`'s scores: one scored completion each (its reward, KL, reference NLL, tokens)."""
        rows = scores
        if not rows:
            return {}
        n = len(rows)
        texts = [r["completion"] for r in rows]
        tokens = sum(r["tokens"] for r in rows)
        show = enc.options["rollouts"].settings["show_samples"]
        return {"reward": sum(r["reward"] for r in rows) / n, "kl": sum(r["kl"] for r in rows) / n,
                "ref_perplexity": math.exp(min(sum(r["ref_nll"] for r in rows) / max(tokens, 1), 50.0)),
                "distinct_1": distinct(texts, 1), "distinct_2": distinct(texts, 2), "length": tokens / n,
                "completions": n, "prompts": len(enc),
                "shown": [{k: r[k] for k in ("prompt", "completion", "reward")} for r in rows
                          if r["sample"] == 0][:show]}

    def prediction_rows(self, rows: list[PromptRow], scores: list[dict], enc: Encoded, label_map) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "index"} for r in scores]

    def generation_eval(self, model, tokenizer, examples: list, gen: dict, dtype=None) -> dict:
        return {}  # the held-out completions are `infer`'s: scored by reward, KL and fluency there

    def predict(self, trained, inputs: list[str | dict], batch_size: int, dtype, warn: bool = True) -> list[dict]:
        """Each text (or {"text"} record) continued by one completion sampled as in training (task.temperature)."""
        texts = [r["text"] for r in records(inputs)]
        s, tokenizer = trained.meta["rl"], trained.tokenizer
        out = []
        for start in range(0, len(texts), batch_size):
            part = texts[start : start + batch_size]
            ids, mask = left_padded([tokenizer(t, add_special_tokens=False)["input_ids"] for t in part],
                                    tokenizer.pad_token_id)
            with autocast_context(torch.device("cpu"), dtype):
                completion, cmask = sample(trained.model, tokenizer, ids, mask, 1, s["max_new_tokens"],
                                           s["temperature"])
            answers = tokenizer.batch_decode(completion * cmask, skip_special_tokens=True)
            out += [{"prompt": t, "response": a} for t, a in zip(part, answers)]
        return out
