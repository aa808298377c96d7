"""`tunecraft explain RUN "text"`: token attributions by integrated gradients (Captum), as HTML and terminal.

Attributions are taken on the word-embedding output (Captum's LayerIntegratedGradients), from a baseline in
which every non-special token is [PAD]; completeness (sum of attributions = F(text) - F(baseline)) holds up
to the integral's approximation error, which is returned as `delta`. The score F is one entry of the
model's logits chosen by `target`: a class index for sequence classification, or a (position, class) pair
for a per-token output [batch, sequence, classes] (token classification plugs in there; the run-level
command reads classification runs until NER runs exist).
"""

from __future__ import annotations

import hashlib
import html
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import TunecraftError
from ..io import write_text
from ..trained import load_trained

Target = int | tuple[int, int]


@dataclass
class Attribution:
    tokens: list[str]
    scores: list[float]
    """One per token (special tokens included; they are never perturbed, so theirs is 0)."""
    target: Target
    target_label: str
    prediction: str
    probabilities: dict[str, float]
    score: float
    """F(text): the target logit."""
    baseline_score: float
    delta: float
    """sum(scores) - (score - baseline_score): the completeness error of the integral."""
    text: str = ""

    def as_dict(self) -> dict:
        return {"text": self.text, "prediction": self.prediction, "target": self.target_label,
                "probabilities": self.probabilities, "tokens": self.tokens, "scores": self.scores,
                "score": self.score, "baseline_score": self.baseline_score, "delta": self.delta}


def _select(logits: torch.Tensor, target: Target) -> torch.Tensor:
    if isinstance(target, tuple):
        position, index = target
        return logits[:, position, index]
    return logits[:, target]


def integrated_gradients(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, target: Target,
                         baseline_ids: torch.Tensor, steps: int = 50,
                         token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, float, float, float]:
    """IG of `target`'s logit w.r.t. the word embeddings of one sequence ([1, n] tensors), summed over the
    hidden size. → (attributions [n], F(input), F(baseline), completeness delta)."""
    from captum.attr import LayerIntegratedGradients

    extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}

    def forward(ids, mask):
        return model(input_ids=ids, attention_mask=mask,
                     **{k: v.expand(ids.shape[0], -1) for k, v in extra.items()}).logits.float()

    model.eval()
    captum_target = target if isinstance(target, int) else tuple(target)
    lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
    attributions, delta = lig.attribute(input_ids, baselines=baseline_ids, additional_forward_args=(attention_mask,),
                                        target=captum_target, n_steps=steps, internal_batch_size=steps,
                                        return_convergence_delta=True)
    with torch.no_grad():
        f_in = _select(forward(input_ids, attention_mask), target).item()
        f_base = _select(forward(baseline_ids, attention_mask), target).item()
    return attributions.sum(-1)[0].detach().float(), f_in, f_base, float(delta.item())


def pad_baseline(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """The input with every non-special token replaced by [PAD] (same length, same special tokens)."""
    special = torch.tensor(tokenizer.get_special_tokens_mask(input_ids[0].tolist(), already_has_special_tokens=True),
                           dtype=torch.bool)
    baseline = input_ids.clone()
    baseline[0, ~special] = tokenizer.pad_token_id
    return baseline


def _encode(tokenizer, text: str, max_length: int) -> dict[str, torch.Tensor]:
    return dict(tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt"))


def attribute_text(model, tokenizer, labels: list[str], text: str, target: str | None = None,
                   steps: int = 50, max_length: int = 128) -> Attribution:
    """Attributions of one text toward `target` (a label name; default: the predicted label)."""
    enc = _encode(tokenizer, text, max_length)
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits.float(), -1)[0]
    predicted = int(probs.argmax())
    if target is None:
        index = predicted
    elif target in labels:
        index = labels.index(target)
    else:
        raise TunecraftError(f"unknown target label '{target}'; the model knows: {', '.join(labels)}")
    baseline = pad_baseline(enc["input_ids"], tokenizer)
    scores, f_in, f_base, delta = integrated_gradients(model, enc["input_ids"], enc["attention_mask"], index,
                                                       baseline, steps, enc.get("token_type_ids"))
    return Attribution(tokens=tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist()),
                       scores=[float(s) for s in scores], target=index, target_label=labels[index],
                       prediction=labels[predicted], probabilities=dict(zip(labels, probs.tolist())),
                       score=f_in, baseline_score=f_base, delta=delta, text=text)


# -- rendering ----------------------------------------------------------------------------------------

def _strength(scores: list[float]) -> list[float]:
    peak = max((abs(s) for s in scores), default=0.0) or 1.0
    return [s / peak for s in scores]


def to_terminal(attr: Attribution, color: bool = True) -> str:
    """Tokens on a green (toward the target) / red (against) background, then the numbers."""
    head = (f"prediction: {attr.prediction} ({attr.probabilities[attr.prediction]:.3f})   attributions toward: "
            f"{attr.target_label}   completeness error: {attr.delta:+.4f} (of {attr.score - attr.baseline_score:+.4f})")
    parts = []
    for token, s in zip(attr.tokens, _strength(attr.scores)):
        if not color:
            parts.append(f"{token}({s:+.2f})")
            continue
        level = int(round(255 * (1 - min(abs(s), 1.0))))
        rgb = (level, 255, level) if s >= 0 else (255, level, level)
        parts.append(f"\x1b[48;2;{rgb[0]};{rgb[1]};{rgb[2]}m\x1b[38;2;0;0;0m{token}\x1b[0m")
    ranked = sorted(zip(attr.tokens, attr.scores), key=lambda p: -abs(p[1]))[:10]
    table = "\n".join(f"  {score:+.4f}  {token}" for token, score in ranked)
    return f"{head}\n{' '.join(parts)}\n{table}"


def attribution_html(attr: Attribution) -> str:
    """The text, the prediction and the coloured tokens as an HTML fragment (escaped), for pages that hold it."""
    spans = []
    for token, raw, s in zip(attr.tokens, attr.scores, _strength(attr.scores)):
        rgb = "0,160,0" if s >= 0 else "210,0,0"
        spans.append(f"<span title='{raw:+.4f}' style='background:rgba({rgb},{abs(s):.3f});padding:2px 3px;"
                     f"margin:1px;border-radius:3px'>{html.escape(token)}</span>")
    probs = ", ".join(f"{html.escape(k)} {v:.3f}" for k, v in attr.probabilities.items())
    return (f"<p><b>text:</b> {html.escape(attr.text)}</p>"
            f"<p><b>prediction:</b> {html.escape(attr.prediction)} ({probs}); attributions toward "
            f"<b>{html.escape(attr.target_label)}</b>: green for, red against (hover for the value); "
            f"completeness error {attr.delta:+.4f} of {attr.score - attr.baseline_score:+.4f}.</p>"
            f"<p>{''.join(spans)}</p>")


def to_html(attr: Attribution) -> str:
    return ("<!doctype html><html><head><meta charset='utf-8'><title>tunecraft explain</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:2.2}</style></head>"
            f"<body><h1>Integrated-gradients attributions</h1>{attribution_html(attr)}</body></html>")


def explain(run: str | Path, text: str, target: str | None = None, steps: int = 50,
            html_path: str | Path | None = None) -> tuple[Attribution, Path]:
    """Attribute one text with a run's model; writes the HTML (default RUN/explanations/<hash>.html)."""
    if not text.strip():
        raise TunecraftError("the text to explain is empty")
    if steps < 1:
        raise TunecraftError(f"--steps must be at least 1 (got {steps})")
    trained = load_trained(run)
    model = trained.model.float()
    attr = attribute_text(model, trained.tokenizer, trained.meta["labels"], text, target, steps,
                          trained.meta["max_length"])
    if html_path is None:
        digest = hashlib.sha1(f"{text}\0{attr.target_label}".encode()).hexdigest()[:12]
        html_path = Path(run) / "explanations" / f"{digest}.html"
    html_path = Path(html_path)
    write_text(html_path, to_html(attr))
    return attr, html_path


# -- sanity check: do the top-attributed tokens matter more than random ones? ---------------------------

def deletion_check(model, tokenizer, texts: list[str], k: int | list[int] = 3, steps: int = 32, seed: int = 0,
                   max_length: int = 128) -> dict:
    """For each text: delete its k tokens with the highest attribution toward the predicted class, and
    separately k random (non-special) tokens; compare the drop in the predicted class's probability and how
    often the prediction changes. Texts with fewer than k + 1 non-special tokens are skipped. With a list
    of k, the attributions are computed once and the result has one entry per k ({"k=1": ..., ...})."""
    ks = [k] if isinstance(k, int) else list(k)
    rng = random.Random(seed)
    model.eval()
    rows: dict[int, list[dict]] = {n: [] for n in ks}
    for text in texts:
        enc = _encode(tokenizer, text, max_length)
        ids = enc["input_ids"]
        special = tokenizer.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True)
        positions = [i for i, s in enumerate(special) if not s]
        usable = [n for n in ks if len(positions) >= n + 1]
        if not usable:
            continue
        with torch.no_grad():
            probs = torch.softmax(model(**enc).logits.float(), -1)[0]
        predicted = int(probs.argmax())
        scores, *_ = integrated_gradients(model, ids, enc["attention_mask"], predicted,
                                          pad_baseline(ids, tokenizer), steps, enc.get("token_type_ids"))
        ranked = sorted(positions, key=lambda i: -float(scores[i]))
        for n in usable:
            row = {}
            for name, drop_at in (("top", set(ranked[:n])), ("random", set(rng.sample(positions, n)))):
                keep = [i for i in range(ids.shape[1]) if i not in drop_at]
                with torch.no_grad():
                    after = torch.softmax(model(input_ids=ids[:, keep],
                                                attention_mask=enc["attention_mask"][:, keep]).logits.float(), -1)[0]
                row[f"{name}_drop"] = float(probs[predicted] - after[predicted])
                row[f"{name}_flip"] = float(int(after.argmax()) != predicted)
            rows[n].append(row)
    results = {}
    for n in ks:
        if not rows[n]:
            raise TunecraftError(f"no text has more than {n} tokens to delete")
        count = len(rows[n])
        results[n] = {key: sum(r[key] for r in rows[n]) / count for key in rows[n][0]}
        results[n].update({"texts": count, "k": n, "steps": steps})
    return results[ks[0]] if isinstance(k, int) else {f"k={n}": results[n] for n in ks}
