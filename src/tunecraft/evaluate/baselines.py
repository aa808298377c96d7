"""Baselines that train nothing, for classification with a sentence encoder: zero-shot by embedding
similarity to label descriptions, and few-shot by nearest class prototype (the mean embedding of k
examples per class). Their numbers sit next to the fine-tuned ones in every classification report."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from .metrics import classification_metrics


@torch.no_grad()
def embed(model, tokenizer, texts: list[str], max_length: int = 128, batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled, L2-normalised last hidden states (how sentence-transformers pools all-MiniLM-L6-v2)."""
    model.eval()
    out = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch with less padding
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    result = torch.empty(len(texts), out[0].shape[-1]) if out else torch.empty(0)
    if out:
        result[torch.tensor(order)] = torch.cat(out)
    return result


def default_descriptions(labels: list[str]) -> list[dict[str, str]]:
    """Candidate descriptions when the recipe gives none: the bare label, and two templates around it."""
    return [{label: template.format(label) for label in labels}
            for template in ("{}", "This text is {}.", "A {} example.")]


def _accuracy(scores: torch.Tensor, gold: list[int]) -> float:
    return float((scores.argmax(dim=-1) == torch.tensor(gold)).float().mean())


def zero_shot(encode, labels: list[str], candidates: list[dict[str, str]], val_x, val_y: list[int], test_x,
              test_y: list[int]) -> dict:
    """Pick the description set with the best validation accuracy (never the test split), then score the
    test split by cosine similarity of each text's embedding to each label's description."""
    tried = []
    for described in candidates:
        d = encode([described[name] for name in labels])
        tried.append((_accuracy(val_x @ d.T, val_y) if val_y else 0.0, described, d))
    best_val, best, d = max(tried, key=lambda t: t[0])
    metrics = classification_metrics(test_y, (test_x @ d.T).argmax(-1).tolist(), labels)
    return {"name": "zero-shot (embedding similarity)", "descriptions": best, "validation_accuracy": best_val,
            "candidates": len(candidates), "metrics": metrics}


def prototypes(encode, labels: list[str], train, test_x, test_y: list[int], shots: int, seeds: int = 3) -> dict:
    """Nearest class prototype from `shots` random training examples per class, over `seeds` draws."""
    by_label = [[e.text for e in train if e.label == name] for name in labels]
    accuracies, last = [], None
    for seed in range(seeds):
        rng = random.Random(seed)
        protos = [F.normalize(encode(rng.sample(pool, min(shots, len(pool)))).mean(0), dim=-1) for pool in by_label]
        last = classification_metrics(test_y, (test_x @ torch.stack(protos).T).argmax(-1).tolist(), labels)
        accuracies.append(last["accuracy"])
    mean = sum(accuracies) / len(accuracies)
    std = (sum((a - mean) ** 2 for a in accuracies) / len(accuracies)) ** 0.5
    return {"name": f"few-shot prototypes (k={shots} per class)", "accuracies": accuracies, "accuracy_mean": mean,
            "accuracy_std": std, "metrics": {**last, "accuracy": mean}}


def run_baselines(base_path, config, data) -> list[dict]:
    """The baselines the recipe asks for, on the run's own validation/test splits, with the base encoder."""
    from transformers import AutoModel, AutoTokenizer

    cfg = config.baselines
    if config.task != "classification" or base_path is None or not (cfg.zero_shot or cfg.shots):
        return []
    tokenizer = AutoTokenizer.from_pretrained(str(base_path))
    model = AutoModel.from_pretrained(str(base_path))

    def encode(texts: list[str]) -> torch.Tensor:
        return embed(model, tokenizer, texts, config.model.max_length)

    labels = data.label_map.labels
    ids = data.label_map.label2id
    test = data.test or data.validation
    test_x, test_y = encode([e.text for e in test]), [ids[e.label] for e in test]
    out = []
    if cfg.zero_shot:
        val_x = encode([e.text for e in data.validation]) if data.validation else None
        out.append(zero_shot(encode, labels, cfg.descriptions or default_descriptions(labels), val_x,
                             [ids[e.label] for e in data.validation], test_x, test_y))
    for k in cfg.shots:
        out.append(prototypes(encode, labels, data.train, test_x, test_y, k))
    return out
