"""Label maps, seeded splits, tokenization, the encoded features of any modality and length-grouped
dynamic-padding batches."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import DataError, TunecraftError
from .bundled import LABELS as BUNDLED_LABELS
from .bundled import LANGUAGE, describe, is_bundled, read_bundled
from .readers import Columns, Example, read_examples

IGNORE = -100
"""Label id of positions that take no part in the loss or the metrics (padding, later sub-tokens)."""


@dataclass
class LabelMap:
    labels: list[str]

    @classmethod
    def from_examples(cls, examples: list[Example]) -> LabelMap:
        names = {e.label for e in examples}
        if len(names) < 2:
            raise TunecraftError(f"the training data has {len(names)} distinct label(s); at least 2 are needed")
        try:
            ordered = sorted(names, key=lambda n: (0, int(n)))
        except ValueError:
            ordered = sorted(names)
        return cls(ordered)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    def encode(self, example: Example, label_field: str) -> int:
        try:
            return self.label2id[example.label]
        except KeyError:
            raise DataError(
                example.path, example.line, label_field,
                f"unknown label '{example.label}'; the model knows: {', '.join(self.labels)}",
            ) from None


@dataclass
class TaskData:
    """What a task's `load_data` returns, whatever the task: the three splits (examples of the task's own kind:
    texts, sentences, conversations, pairs, prompts), the label map (empty for tasks without labels), the fields
    the rows are read by, a description of the source, and what the run summary keeps about the data."""

    train: list
    validation: list
    test: list
    label_map: LabelMap = field(default_factory=lambda: LabelMap([]))
    columns: Columns = field(default_factory=Columns)
    description: str = ""
    summary: dict = field(default_factory=dict)
    """Extra entries of summary.json about the data (token classification: {"entities": counts per split})."""


ClassificationData = TaskData


def examples_fingerprint(examples: list) -> str:
    """A short hash of a split's examples — their contents, not the file and line they were read from, nor their
    order: two runs scored on the same examples have the same one (`tunecraft report` warns when they differ)."""
    rows = []
    for e in examples:
        fields = dataclasses.asdict(e) if dataclasses.is_dataclass(e) else {"value": e}
        for where in ("path", "line"):
            fields.pop(where, None)
        rows.append(hashlib.sha256(json.dumps(fields, sort_keys=True, default=str, ensure_ascii=False).encode())
                    .hexdigest())
    return hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()[:16]
"""The name classification's data had before every task's data was one type."""


@dataclass(frozen=True)
class BundledSets:
    """A task's bundled example sets: their names, the fixed seeded split of one ({split: examples}), what one is
    called in messages, and optionally all of one's examples in their own order (`split: all`)."""

    names: Collection[str]
    split: Callable[[str, int, tuple[float, float]], dict[str, list]]
    what: str = "set"
    whole: Callable[[str], list] | None = None


def bundled_or_file(spec: str, split: str, seed: int, fractions, bundled: BundledSets, read) -> list:
    """The examples `tunecraft eval` reads, for every task: a bundled set's split ('all' for every example) or a
    file (`read(path)`)."""
    if spec in bundled.names:
        if split != "all":
            return bundled.split(spec, seed, fractions)[split]
        if bundled.whole is not None:
            return bundled.whole(spec)
        return [e for part in bundled.split(spec, seed, fractions).values() for e in part]
    if Path(spec).exists():
        return read(spec)
    raise TunecraftError(f"'{spec}' is neither a bundled {bundled.what} ({', '.join(bundled.names)}) nor a file")


def limit_sample(items: list, n: int | None, seed: int) -> list:
    """At most n items, a seeded sample kept in its original order."""
    if n is None or n >= len(items):
        return items
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in sorted(order[:n])]


def task_splits(cfg, read, bundled: dict, bundled_split, kind: str, source: str) -> tuple[dict[str, list], str]:
    """train/validation/test for a task's data section: from files (`read(path)`; a missing validation or
    test split is carved from train by the seed) or from a bundled set (`bundled_split(name, seed,
    fractions)`), then limited by max_train_samples/max_eval_samples. Returns the parts and a description."""
    split = cfg.split
    if cfg.train:
        train = read(cfg.train)
        given = {s: read(getattr(cfg, s)) for s in ("validation", "test") if getattr(cfg, s)}
        missing = [s for s in ("validation", "test") if s not in given]
        *carved, train = seeded_split(train, [getattr(split, s) for s in missing], split.seed)
        given.update(zip(missing, carved))
        parts = {"train": train, **given}
        description = f"{cfg.train}" + "".join(f" + {s} from file" for s in ("validation", "test") if s not in missing)
    elif cfg.dataset in bundled:
        parts = bundled_split(cfg.dataset, split.seed, (split.validation, split.test))
        description = f"bundled '{cfg.dataset}' ({source}, seed {split.seed})"
    else:
        raise TunecraftError(f"data.dataset '{cfg.dataset}' is not a bundled {kind} set ({', '.join(bundled)}) "
                             "and data.train is not set")
    parts["train"] = limit_sample(parts["train"], cfg.max_train_samples, split.seed)
    for s in ("validation", "test"):
        parts[s] = limit_sample(parts[s], cfg.max_eval_samples, split.seed)
    if not parts["train"]:
        raise TunecraftError("the training split is empty")
    return parts, description


def seeded_split(examples: list[Example], fractions: list[float], seed: int) -> list[list[Example]]:
    """Split by a seeded permutation: the first parts get `fractions` of the data, the last the rest."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    parts, start = [], 0
    for frac in fractions:
        size = round(len(examples) * frac)
        parts.append([examples[i] for i in order[start : start + size]])
        start += size
    parts.append([examples[i] for i in order[start:]])
    return parts


def stratified_split(examples: list[Example], fractions: list[float], seed: int) -> list[list[Example]]:
    """Like `seeded_split` (the same part sizes: round(n x fraction)), each part's share of every label as near
    its share of the data as whole rows allow (largest remainder), each label's rows in a seeded order, the
    parts shuffled by the seed; every label keeps at least one row for the last part (training). Written by hand:
    sklearn's stratified splitters refuse a label with a single example."""
    by_label: dict[str, list[Example]] = {}
    for ex in examples:
        by_label.setdefault(str(ex.label), []).append(ex)
    groups = list(by_label.values())
    for i, group in enumerate(groups):
        random.Random(seed + i).shuffle(group)
    taken = [0] * len(groups)
    parts: list[list[Example]] = []
    for frac in fractions:
        share = [len(g) * frac for g in groups]
        quota = [min(int(s), len(g) - t - 1) for s, g, t in zip(share, groups, taken)]
        order = sorted(range(len(groups)), key=lambda i: share[i] - int(share[i]), reverse=True)
        for i in order:
            if sum(quota) >= round(len(examples) * frac):
                break
            if taken[i] + quota[i] < len(groups[i]) - 1:
                quota[i] += 1
        parts.append([ex for i, g in enumerate(groups) for ex in g[taken[i] : taken[i] + max(quota[i], 0)]])
        taken = [t + max(q, 0) for t, q in zip(taken, quota)]
    parts.append([ex for i, g in enumerate(groups) for ex in g[taken[i]:]])
    for i, part in enumerate(parts):
        random.Random(seed + 1000 + i).shuffle(part)
    return parts


def load_classification_data(cfg) -> TaskData:
    """Build train/validation/test from a DataConfig: a bundled set or the user's files."""
    cols = Columns(cfg.text_column, cfg.label_column, cfg.text_pair_column, cfg.missing_labels)
    split = cfg.split
    if cfg.train:
        train = read_examples(cfg.train, cols, cfg.format)
        given = {s: read_examples(getattr(cfg, s), cols, cfg.format) for s in ("validation", "test") if getattr(cfg, s)}
        missing = [s for s in ("validation", "test") if s not in given]
        fractions = [getattr(split, s) for s in missing]
        carve = stratified_split if split.stratify else seeded_split
        *carved, train = carve(train, fractions, split.seed)
        given.update(zip(missing, carved))
        validation, test = given["validation"], given["test"]
        description = f"{cfg.train}" + "".join(f" + {s} from file" for s in ("validation", "test") if s not in missing)
        label_map = LabelMap.from_examples(train)
    elif is_bundled(cfg.dataset):
        cols = Columns("text", "label", None)
        test, validation, train = seeded_split(read_bundled(cfg.dataset), [split.test, split.validation], split.seed)
        description = describe(cfg.dataset)
        label_map = LabelMap(list(BUNDLED_LABELS))
    else:
        raise TunecraftError(
            f"data.dataset '{cfg.dataset}' is not a bundled set ({', '.join(LANGUAGE)}) and data.train is not set"
        )
    train = limit_sample(train, cfg.max_train_samples, split.seed)
    validation = limit_sample(validation, cfg.max_eval_samples, split.seed)
    test = limit_sample(test, cfg.max_eval_samples, split.seed)
    if not train:
        raise TunecraftError("the training split is empty")
    for part in (validation, test):
        for ex in part:
            label_map.encode(ex, cols.label)
    return TaskData(train, validation, test, label_map, cols, description)


def bundled_classification_split(name: str, seed: int, fractions: tuple[float, float]) -> dict[str, list[Example]]:
    """A bundled classification set's fixed seeded split (test, validation, the rest train)."""
    test, validation, train = seeded_split(read_bundled(name), [fractions[1], fractions[0]], seed)
    return {"test": test, "validation": validation, "train": train}


BUNDLED_CLASSIFICATION = BundledSets(LANGUAGE, bundled_classification_split, "dataset", read_bundled)


def load_eval_examples(spec: str, columns: Columns, fmt: str = "auto", split: str = "test",
                       seed: int = 42, fractions: tuple[float, float] = (0.1, 0.1)) -> list[Example]:
    """Examples to evaluate on: a bundled set's split ('all' for every example) or a file."""
    return bundled_or_file(spec, split, seed, fractions, BUNDLED_CLASSIFICATION,
                           lambda path: read_examples(path, columns, fmt))


@dataclass
class Encoded:
    """A split's model inputs, unpadded, one entry per feature: token sequences (`input_ids`, `token_type_ids`:
    padded per batch, with an attention mask), and/or any other inputs in `features` (name → one array-like per
    feature, stacked per batch: an image's pixel_values, a clip's input_features, a vector), so a task of any
    modality is one. For classification one feature per example and `labels` one id each; for token
    classification `labels` holds one id per token (-100: not scored), a long sentence may give several
    overlapping windows, and `sample`/`word_ids` map each feature back to its sentence and words."""

    input_ids: list[list[int]] | None
    """Token ids per feature; None for inputs without tokens (then `features` holds them)."""
    token_type_ids: list[list[int]] | None
    labels: list[int] | list[list[int]] | None
    truncated: int
    sample: list[int] | None = None
    word_ids: list[list[int | None]] | None = None
    gold: list[list[str]] | None = None
    """Token classification: every sentence's gold tags, one per word (for word-level metrics)."""
    options: dict = field(default_factory=dict)
    """Task settings that scoring needs (the tag scheme, strict entity matching, window pooling)."""
    source_lengths: list[int] | None = None
    """Classification: each text's length in tokens before any cut (see long_documents.report_long_texts)."""
    cut: list[bool] | None = None
    """Classification: whether each example was longer than max_length and cut to it."""
    features: dict[str, list] = field(default_factory=dict)
    """Model inputs other than token sequences, by the name the model's forward takes, one entry per feature."""
    sizes: list[int] | None = None
    """Each feature's length where it has no token sequence (what batches are grouped by); 1 each by default."""

    @classmethod
    def of(cls, features: dict[str, list], labels: list | None = None, sizes: list[int] | None = None) -> Encoded:
        """Inputs without tokens (images, audio, vectors): `features` by input name, one entry per feature."""
        return cls(None, None, labels, 0, features=features, sizes=sizes)

    def __len__(self) -> int:
        if self.input_ids is not None:
            return len(self.input_ids)
        return len(next(iter(self.features.values()), []))

    @property
    def lengths(self) -> list[int]:
        if self.input_ids is not None:
            return [len(ids) for ids in self.input_ids]
        return list(self.sizes) if self.sizes is not None else [1] * len(self)


def refuse_overlong(policy: str, setting: str, source, tokens: int, max_length: int, what: str = "") -> None:
    """An example longer than model.max_length under the `policy` "error": a DataError naming its file and line
    (`source.path`, `source.line`) and `setting`, the recipe key that would drop or cut it instead."""
    if policy == "error":
        raise DataError(source.path, source.line, None, f"{tokens} tokens{what}, more than model.max_length="
                        f"{max_length}; raise max_length or set {setting} to drop or truncate")


def tokenize(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int):
    """→ (input_ids, token_type_ids or None, untruncated lengths). One pass without truncation; only the
    texts longer than max_length are tokenized again with the tokenizer's own truncation (which knows how to
    cut a pair), so the common case tokenizes once."""
    full = tokenizer(texts, pairs, truncation=False)
    ids, types = full["input_ids"], full.get("token_type_ids")
    lengths = [len(x) for x in ids]
    long = [i for i, n in enumerate(lengths) if n > max_length]
    if long:
        cut = tokenizer([texts[i] for i in long], [pairs[i] for i in long] if pairs else None,
                        truncation=True, max_length=max_length)
        for j, i in enumerate(long):
            ids[i] = cut["input_ids"][j]
            if types is not None:
                types[i] = cut["token_type_ids"][j]
    return ids, types, lengths


def encode(tokenizer, examples: list[Example], max_length: int, label_map: LabelMap | None = None,
           label_field: str = "label") -> Encoded:
    """Tokenize once, up front, without padding (padding happens per batch)."""
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples] if examples and examples[0].text_pair is not None else None
    ids, types, lengths = tokenize(tokenizer, texts, pairs, max_length)
    labels = [label_map.encode(e, label_field) for e in examples] if label_map else None
    cut = [n > max_length for n in lengths]
    return Encoded(ids, types, labels, sum(cut), source_lengths=lengths, cut=cut)


def pad_multiple(device) -> int:
    """Round padded length up to a multiple of 8 on CUDA (tensor cores); not on CPU, where on `mr`
    (mean 26.9 tokens) it raised padding from 2.8% to 13.6% of the tokens processed."""
    return 8 if device.type == "cuda" else 1


def batch_order(lengths: list[int], batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                group_by_length: bool = True) -> list[list[int]]:
    """Batches of indices. Length grouping sorts within shuffled mega-batches of 50 batches, which cuts
    padding while keeping batches random; the order depends only on (seed, epoch), so resume is exact."""
    n = len(lengths)
    if not shuffle:
        order = sorted(range(n), key=lambda i: -lengths[i]) if group_by_length else list(range(n))
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(n))
    rng.shuffle(order)
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    mega = batch_size * 50
    batches = []
    for start in range(0, n, mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(enc: Encoded, indices: list[int], pad_id: int | None,
            pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """A batch of the features `indices`: token sequences padded to the longest member, rounded up to
    `pad_to_multiple_of` (see pad_multiple), with their attention mask; other inputs (`enc.features`)
    stacked."""
    batch = pad_tokens(enc, indices, pad_id, pad_to_multiple_of) if enc.input_ids is not None else {}
    for name, column in enc.features.items():
        batch[name] = torch.stack([torch.as_tensor(column[i]) for i in indices])
    if enc.labels is not None:
        if isinstance(enc.labels[indices[0]], list):  # one label per token: padded like the tokens
            labels = torch.full(batch["input_ids"].shape, IGNORE, dtype=torch.long)
            for row, i in enumerate(indices):
                labels[row, : len(enc.labels[i])] = torch.tensor(enc.labels[i])
            batch["labels"] = labels
        else:
            batch["labels"] = torch.tensor([enc.labels[i] for i in indices], dtype=torch.long)
    return batch


def pad_tokens(enc: Encoded, indices: list[int], pad_id: int, pad_to_multiple_of: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask (and token_type_ids where the features have them) of a padded batch."""
    width = max(len(enc.input_ids[i]) for i in indices)
    width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    types = torch.zeros((len(indices), width), dtype=torch.long) if enc.token_type_ids else None
    for row, i in enumerate(indices):
        seq = enc.input_ids[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        if types is not None:
            types[row, : len(seq)] = torch.tensor(enc.token_type_ids[i])
    batch = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    return batch
