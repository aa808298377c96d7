"""From-scratch model sizes as named configs, and the character-level tokenizer such models start with."""

from __future__ import annotations

from collections import Counter

# BERT's small-model grid (Turc et al. 2019, "Well-Read Students Learn Better"): layers, hidden, heads
ENCODER_SIZES = {
    "encoder-tiny": {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2},
    "encoder-mini": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4},
    "encoder-small": {"num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8},
}
# Llama-style decoders (RoPE, SwiGLU, RMSNorm), tied input/output embeddings
DECODER_SIZES = {
    "decoder-tiny": {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2},
    "decoder-mini": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4},
}
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def encoder_config(size: str, vocab_size: int, max_length: int):
    from transformers import BertConfig

    shape = ENCODER_SIZES[size]
    return BertConfig(vocab_size=vocab_size, intermediate_size=4 * shape["hidden_size"],
                      max_position_embeddings=max(512, max_length), pad_token_id=0, **shape)


def decoder_config(size: str, vocab_size: int, max_length: int, bos_id: int, eos_id: int, pad_id: int):
    from transformers import LlamaConfig

    shape = DECODER_SIZES[size]
    # SwiGLU's 8/3·H keeps the MLP's parameter count at a 4·H GELU MLP's
    return LlamaConfig(vocab_size=vocab_size, intermediate_size=8 * shape["hidden_size"] // 3,
                       num_key_value_heads=shape["num_attention_heads"], max_position_embeddings=max_length,
                       bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id, tie_word_embeddings=True,
                       **shape)


def char_tokenizer(texts, min_count: int = 1, max_size: int | None = None):
    """One token per character seen at least `min_count` times in `texts` (most frequent first; at most
    `max_size` of them), [UNK] for the rest, BERT's special tokens and [CLS] ... [SEP] framing; a fast
    tokenizer that AutoTokenizer reloads."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    counts = Counter(ch for text in texts for ch in text if not ch.isspace())
    chars = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
    chars = chars[:max_size]
    vocab = {tok: i for i, tok in enumerate(SPECIAL + chars)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=1))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False,
                                                lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Split(Regex("."), behavior="isolated")])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
