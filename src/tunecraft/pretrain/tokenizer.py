"""`tunecraft tokenizer`: train a WordPiece, byte-level BPE or character tokenizer (`tokenizers`) on a corpus,
save it as a Hugging Face tokenizer folder, and measure it on held-out text."""

from __future__ import annotations

from pathlib import Path

from ..io import refuse_existing, write_folder, write_json
from ..models.sizes import SPECIAL, char_tokenizer
from .config import TokenizerRecipe
from .corpora import load_corpus, sentences

BPE_SPECIAL = ["<|endoftext|>", "<pad>"]


def build_tokenizer(recipe: TokenizerRecipe, texts: list[str]):
    """A PreTrainedTokenizerFast trained on `texts` as the recipe says."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if recipe.kind == "chars":
        return char_tokenizer(texts, min_count=recipe.min_frequency, max_size=recipe.vocab_size - len(SPECIAL))
    if recipe.kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=recipe.lowercase, strip_accents=recipe.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=recipe.vocab_size, min_frequency=recipe.min_frequency,
                                            special_tokens=SPECIAL, show_progress=False)
        tok.train_from_iterator(texts, trainer)
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                       sep_token="[SEP]", mask_token="[MASK]")
    tok = Tokenizer(models.BPE())
    if recipe.lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=recipe.vocab_size, min_frequency=recipe.min_frequency,
                                  special_tokens=BPE_SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BPE_SPECIAL[0], eos_token=BPE_SPECIAL[0],
                                   pad_token=BPE_SPECIAL[1])


def tokenizer_stats(tokenizer, texts: list[str]) -> dict:
    """Unknown-token rate, tokens per sentence and characters per token over `texts` (no special tokens)."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    tokens = sum(len(x) for x in ids)
    unk = tokenizer.unk_token_id
    unknown = sum(t == unk for x in ids for t in x) if unk is not None else 0
    chars = sum(len("".join(t.split())) for t in texts)
    return {"sentences": len(texts), "tokens": tokens, "unk_rate": unknown / max(tokens, 1),
            "tokens_per_sentence": tokens / max(len(texts), 1), "chars_per_token": chars / max(tokens, 1)}


def train_tokenizer(recipe: TokenizerRecipe, overwrite: bool = False) -> dict:
    """Train, save (atomically) into runs/<name>/ and measure on the corpus's held-out documents."""
    target = recipe.run_dir
    refuse_existing(target, overwrite, "or name=... for a new one")
    train_docs, held_docs = load_corpus(recipe.corpus)
    tokenizer = build_tokenizer(recipe, sentences(train_docs))
    result = {"name": recipe.name, "kind": recipe.kind, "vocab_size": len(tokenizer),
              "corpus": {"sources": recipe.corpus.sources, "files": recipe.corpus.files,
                         "train_documents": len(train_docs), "heldout_documents": len(held_docs)},
              "heldout": tokenizer_stats(tokenizer, sentences(held_docs)), "path": str(target)}
    def write(tmp: Path) -> None:
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "tokenizer_report.json", result)

    write_folder(target, write)
    return result
