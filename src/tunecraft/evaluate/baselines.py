"""Classification baselines: with a sentence encoder, zero-shot by embedding
similarity to label descriptions and few-shot by nearest class prototype (the mean embedding of k
examples per class); with a causal LM, in-context few-shot (an instruction and k examples per class in the
prompt, each label word scored by its log-likelihood); and the strong cheap bar every fine-tune should
clear, TF-IDF word 1-2 grams + a linear SVM fit on the run's own training split (`tfidf_svm`; the only
baseline here that trains, in seconds). Their numbers sit next to the fine-tuned ones in every
classification report, and a fine-tuned result below a bar baseline (`"bar": True`) is marked
(`below_baseline`)."""

from __future__ import annotations

import random
import re

import torch
import torch.nn.functional as F

from ..metrics.labels import classification_metrics, entity_metrics


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


TFIDF_NAME = "TF-IDF + LinearSVC"
PAIR_SEPARATOR = " [SEP] "
"""Joins a sentence pair into one text for TF-IDF: the token "sep" between the two keeps their words apart
(bigrams across the join contain it)."""


def tfidf_text(example) -> str:
    return example.text if example.text_pair is None else example.text + PAIR_SEPARATOR + example.text_pair


UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0e7f]")
"""Scripts written without spaces between words: Japanese kana, CJK ideographs, Thai."""


def unspaced(texts: list[str]) -> bool:
    """Whether the texts are mostly in a script without spaces between words (a third of their letters or more),
    where sklearn's word pattern would take a whole clause for one word."""
    sample = "".join(texts[:2000])
    letters = sum(ch.isalpha() for ch in sample)
    return letters > 0 and len(UNSPACED.findall(sample)) >= letters / 3


def tfidf_pipeline(seed: int = 0, chars: bool = False):
    """TfidfVectorizer (word 1-2 grams, or with `chars` character 1-3 grams; sublinear tf) into LinearSVC,
    sklearn's defaults otherwise."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    vectorizer = (TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True) if chars else
                  TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True))
    return make_pipeline(vectorizer, LinearSVC(random_state=seed))


def tfidf_svm(train, test, labels: list[str], seed: int = 0) -> list[dict]:
    """TF-IDF + LinearSVC fit on the training examples, scored on the test examples; a bar baseline. Nothing
    (an empty list) when the training split holds fewer than two labels, no word of two characters (sklearn's
    token pattern: "empty vocabulary"), or there is no test example."""
    ids = {name: i for i, name in enumerate(labels)}
    train_y = [ids[e.label] for e in train]
    if len(set(train_y)) < 2 or not test:
        return []
    texts = [tfidf_text(e) for e in train]
    chars = unspaced(texts)
    try:
        pipeline = tfidf_pipeline(seed, chars).fit(texts, train_y)
    except ValueError as err:
        if "empty vocabulary" not in str(err):
            raise
        return []
    predictions = pipeline.predict([tfidf_text(e) for e in test]).tolist()
    features = len(pipeline[0].vocabulary_)
    return [{"name": TFIDF_NAME, "bar": True, "features": features,
             "note": f"{'character 1-3' if chars else 'word 1-2'} grams, sublinear tf, {features:,} features from "
                     f"{len(train):,} training texts",
             "metrics": classification_metrics([ids[e.label] for e in test], predictions, labels)}]


def below_baseline(metrics: dict, baselines: list[dict], headline: tuple[str, ...]) -> list[str]:
    """One line per bar baseline that beats the fine-tuned `metrics` on a headline metric, e.g.
    "below baseline: TF-IDF + LinearSVC 78.5% > 60.3% (accuracy), 78.4% > 55.1% (macro_f1)"."""
    out = []
    for b in baselines or []:
        theirs = b.get("metrics") or {}
        gaps = [f"{100 * theirs[k]:.1f}% > {100 * metrics[k]:.1f}% ({k})" for k in headline
                if b.get("bar") and theirs.get(k) is not None and metrics.get(k) is not None and metrics[k] < theirs[k]]
        if gaps:
            out.append(f"below baseline: {b['name']} " + ", ".join(gaps))
    return out


def masked_lm(base_path):
    """The base model with its masked-LM head, or a ConfigError if it has none (a fresh head scores noise)."""
    from transformers import AutoModelForMaskedLM

    from ..errors import ConfigError

    model, info = AutoModelForMaskedLM.from_pretrained(str(base_path), output_loading_info=True)
    fresh = [k for k in info.get("missing_keys", []) if "embeddings" not in k]
    if fresh:
        raise ConfigError(f"baselines.cloze: the base model at {base_path} has no masked-LM head ({fresh[0]} is "
                          "missing); pre-train or continue pre-training it with the MLM objective first")
    return model.eval()


def verbalizer_ids(tokenizer, labels: list[str], verbalizers: dict[str, list[str]]) -> list[list[int]]:
    from ..errors import ConfigError

    missing = [name for name in labels if not verbalizers.get(name)]
    if missing:
        raise ConfigError(f"baselines.cloze.verbalizers: no words for {', '.join(missing)}")
    ids = []
    for name in labels:
        row = []
        for word in verbalizers[name]:
            pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
            if len(pieces) != 1 or pieces[0] == tokenizer.unk_token_id:
                raise ConfigError(f"baselines.cloze.verbalizers.{name}: '{word}' is not one token of the base "
                                  f"model's vocabulary (it becomes {tokenizer.convert_ids_to_tokens(pieces)})")
            row.append(pieces[0])
        ids.append(row)
    return ids


@torch.no_grad()
def cloze(model, tokenizer, labels: list[str], cfg, texts: list[str], gold: list[int], max_length: int = 128,
          batch_size: int = 32) -> dict:
    """Fill the template, read the masked-LM log-probabilities at the mask, score each label by the
    log-sum-exp over its verbaliser words. Long texts are cut from the left so the mask survives."""
    if "{mask}" not in cfg.template or "{text}" not in cfg.template:
        from ..errors import ConfigError

        raise ConfigError("baselines.cloze.template: must contain {text} and {mask}")
    ids = verbalizer_ids(tokenizer, labels, cfg.verbalizers)
    tokenizer.truncation_side = "left"
    preds = []
    for start in range(0, len(texts), batch_size):
        prompts = [cfg.template.format(text=t, mask=tokenizer.mask_token) for t in texts[start:start + batch_size]]
        batch = tokenizer(prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        logits = model(**batch).logits
        rows, cols = (batch["input_ids"] == tokenizer.mask_token_id).nonzero(as_tuple=True)
        logp = logits[rows, cols].log_softmax(-1)
        scores = torch.stack([logp[:, row].logsumexp(-1) for row in ids], dim=-1)
        preds += scores.argmax(-1).tolist()
    tokenizer.truncation_side = "right"
    return {"name": "zero-shot cloze prompt (masked LM)", "template": cfg.template,
            "verbalizers": cfg.verbalizers, "metrics": classification_metrics(gold, preds, labels)}


def lexicon_ner(train, test, scheme: str = "bio", strict: bool = False) -> dict:
    """The NER baseline that trains nothing: every entity string of the training split (its most frequent
    type), tagged wherever it occurs in the test split, longest match first, left to right."""
    from collections import Counter

    from ..data.ner import Span, spans_to_tags, tags_to_spans

    seen: dict[tuple, Counter] = {}
    for sentence in train:
        for span in tags_to_spans(sentence.tags)[0]:
            seen.setdefault(tuple(sentence.tokens[span.start:span.end]), Counter())[span.type] += 1
    known = {words: kinds.most_common(1)[0][0] for words, kinds in seen.items()}
    longest = max(map(len, known), default=0)
    pred = []
    for sentence in test:
        tokens, spans, i = sentence.tokens, [], 0
        while i < len(tokens):
            for size in range(min(longest, len(tokens) - i), 0, -1):
                kind = known.get(tuple(tokens[i:i + size]))
                if kind is not None:
                    spans.append(Span(i, i + size, kind))
                    i += size
                    break
            else:
                i += 1
        pred.append(spans_to_tags(len(tokens), spans, scheme))
    metrics = entity_metrics([s.tags for s in test], pred, scheme, strict)
    return {"name": "lexicon (training entity strings, longest match)", "entries": len(known), "metrics": metrics}


def icl_prompt(labels: list[str], shots: list[tuple[str, str]], text: str) -> str:
    """An instruction, the examples as Text/Label pairs, then the text to label; the label follows "Label:"."""
    lines = [f"Classify each text as one of: {', '.join(labels)}.", ""]
    for example, label in shots:
        lines += [f"Text: {example}", f"Label: {label}", ""]
    return "\n".join([*lines, f"Text: {text}", "Label:"])


@torch.no_grad()
def label_log_likelihoods(lm, tokenizer, prompt: str, labels: list[str]) -> torch.Tensor:
    """log P(" " + label | prompt) for each label, summed over the label's tokens: one batch of len(labels)
    rows, left-padded so that every label ends the row and only the last positions' logits are computed."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    label_ids = [tokenizer(" " + label, add_special_tokens=False)["input_ids"] for label in labels]
    longest = max(len(ids) for ids in label_ids)
    width = len(prompt_ids) + longest
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = torch.full((len(labels), width), pad, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for row, ids in enumerate(label_ids):
        seq = prompt_ids + ids
        batch[row, width - len(seq):] = torch.tensor(seq)
        mask[row, width - len(seq):] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    logits = lm(input_ids=batch, attention_mask=mask, position_ids=positions, logits_to_keep=longest + 1).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # [labels, longest + 1, vocab]: the row's last positions
    scores = []
    for row, ids in enumerate(label_ids):
        kept = torch.arange(longest - len(ids), longest)  # the positions that predict the label's tokens
        scores.append(logprobs[row, kept, torch.tensor(ids)].sum())
    return torch.stack(scores)


def in_context(lm, tokenizer, labels: list[str], train, test, test_y: list[int], shots: int, seeds: int = 3,
               calibrate: bool = False) -> dict:
    """`shots` random training examples per class (shuffled together) in the prompt, over `seeds` draws; the
    prediction is the label word with the highest log-likelihood. shots=0 is the instruction alone. With
    `calibrate`, each label's probability is divided by its probability for the content-free text "N/A" in
    the same prompt (contextual calibration, Zhao et al. 2021), which removes the prompt's bias to a label."""
    by_label = [[e.text for e in train if e.label == name] for name in labels]
    accuracies, last = [], None
    for seed in range(seeds if shots else 1):
        rng = random.Random(seed)
        examples = [(text, name) for name, pool in zip(labels, by_label)
                    for text in rng.sample(pool, min(shots, len(pool)))]
        rng.shuffle(examples)
        bias = torch.zeros(len(labels))
        if calibrate:
            bias = torch.log_softmax(label_log_likelihoods(lm, tokenizer, icl_prompt(labels, examples, "N/A"),
                                                           labels), dim=0)
        predictions = [int((torch.log_softmax(label_log_likelihoods(lm, tokenizer, icl_prompt(labels, examples,
                                                                                            e.text), labels), dim=0)
                            - bias).argmax()) for e in test]
        last = classification_metrics(test_y, predictions, labels)
        accuracies.append(last["accuracy"])
    mean = sum(accuracies) / len(accuracies)
    std = (sum((a - mean) ** 2 for a in accuracies) / len(accuracies)) ** 0.5
    name = f"in-context{' calibrated' if calibrate else ''} (k={shots} per class, {len(test)} test texts)"
    return {"name": name, "accuracies": accuracies,
            "accuracy_mean": mean, "accuracy_std": std, "metrics": {**last, "accuracy": mean}}


def run_icl_baselines(config, data) -> list[dict]:
    """The in-context baselines with the causal LM named by baselines.icl_model, on a seeded sample of at most
    baselines.icl_max_samples test texts."""
    cfg = config.baselines
    if not cfg.icl_shots:
        return []
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..models import resolve_base

    path = resolve_base(cfg.icl_model)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    test = data.test or data.validation
    if cfg.icl_max_samples and len(test) > cfg.icl_max_samples:
        test = random.Random(config.seed).sample(test, cfg.icl_max_samples)
    labels, ids = data.label_map.labels, data.label_map.label2id
    return [in_context(lm, tokenizer, labels, data.train, test, [ids[e.label] for e in test], k,
                       calibrate=cfg.icl_calibrate) for k in cfg.icl_shots]


def check_classification_baselines(config, data, base) -> None:
    """Refuse a description set that misses a label, or a cloze set-up without a masked-LM head or with a
    verbalizer that is not one token, before training."""
    from ..errors import ConfigError

    for i, described in enumerate(config.baselines.descriptions or []):
        missing = sorted(set(data.label_map.labels) - set(described))
        if missing:
            raise ConfigError(f"baselines.descriptions[{i}]: no description for {', '.join(missing)}")
    if config.baselines.cloze:
        verbalizer_ids(base.tokenizer, data.label_map.labels, config.baselines.cloze.verbalizers)
        if base.path is None:
            raise ConfigError("baselines.cloze: needs a pre-trained base model with a masked-LM head")
        masked_lm(base.path)


def classification_baselines(config, data, base_path) -> list[dict]:
    """TF-IDF + LinearSVC, then the embedding (zero-shot, prototypes), cloze and in-context baselines the
    recipe asks for, on the run's own validation/test splits, with the base encoder."""
    cfg = config.baselines
    test = data.test or data.validation
    tfidf = tfidf_svm(data.train, test, data.label_map.labels, config.seed) if cfg.tfidf else []
    if base_path is None or not (cfg.zero_shot or cfg.shots or cfg.cloze):
        return tfidf + run_icl_baselines(config, data)
    return tfidf + encoder_baselines(config, data, base_path) + run_icl_baselines(config, data)


def encoder_baselines(config, data, base_path) -> list[dict]:
    """The zero-shot, prototype and cloze baselines with the base encoder."""
    cfg = config.baselines
    from transformers import AutoModel, AutoTokenizer

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
    if cfg.cloze:
        out.append(cloze(masked_lm(base_path), tokenizer, labels, cfg.cloze, [e.text for e in test], test_y,
                         config.model.max_length))
    return out


def finetune_shots(config, data, run_dir, fit) -> list[dict]:
    """Few-shot fine-tunes: the run's model and method trained on k random training examples per class for
    `finetune_epochs` epochs (batch at most 8), 3 draws per k, scored on the same test split. `fit(config,
    data)` trains one (tunecraft.train). The sub-runs write under run_dir/few-shot/ and are removed once their
    numbers are read."""
    import shutil
    from dataclasses import replace

    cfg, out = config.baselines, []
    labels = data.label_map.labels
    by_label = {name: [e for e in data.train if e.label == name] for name in labels}
    for k in cfg.finetune_shots:
        accuracies, last = [], None
        for seed in range(3):
            rng = random.Random(seed)
            subset = [e for name in labels for e in rng.sample(by_label[name], min(k, len(by_label[name])))]
            rng.shuffle(subset)
            sub = config.model_copy(deep=True, update={"name": f"k{k}-draw{seed}", "seed": seed,
                                                       "output_dir": str(run_dir / "few-shot")})
            sub.baselines = sub.baselines.model_copy(update={"zero_shot": False, "shots": [], "finetune_shots": []})
            sub.train = sub.train.model_copy(update={"epochs": cfg.finetune_epochs, "max_steps": None,
                                                     "batch_size": min(sub.train.batch_size, 8),
                                                     "eval_each_epoch": False, "progress": False})
            summary = fit(sub, data=replace(data, train=subset))
            last = summary["metrics"]
            accuracies.append(last["accuracy"])
            shutil.rmtree(sub.run_dir, ignore_errors=True)
        shutil.rmtree(run_dir / "few-shot", ignore_errors=True)
        mean = sum(accuracies) / len(accuracies)
        std = (sum((a - mean) ** 2 for a in accuracies) / len(accuracies)) ** 0.5
        out.append({"name": f"few-shot fine-tune ({config.method.name}, k={k} per class)", "accuracies": accuracies,
                    "accuracy_mean": mean, "accuracy_std": std, "epochs": cfg.finetune_epochs,
                    "metrics": {**last, "accuracy": mean}})
    return out
