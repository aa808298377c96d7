"""A Llama-architecture causal LM (SmolLM2, the scratch test decoder) as one GGUF file: weights in f32/f16/bf16,
q8_0 or q4_0, the BPE tokenizer and the chat template in the metadata; and read back with transformers.

Written by hand on the `gguf` package's writer, names and quantizers (llama.cpp's convert_hf_to_gguf.py does the
same for every architecture but is a script outside the package, not a library): the tensor names come from
`gguf.get_tensor_name_map`, the blocks from `gguf.quants`, the Q/K row order is llama.cpp's (see `_permute`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import TunecraftError

# the GGUF tensor type of the 2-D weights for each file type; 1-D tensors (norms) stay f32 as llama.cpp keeps them
TYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0", "q4_0": "Q4_0"}
ARCHITECTURES = {"llama": "LLAMA"}
FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0",
              "q4_0": "MOSTLY_Q4_0"}


def check_exportable(config, gguf_type: str) -> None:
    """Refuse, before anything is written, a model or type this writer does not handle."""
    if gguf_type not in TYPES:
        raise TunecraftError(f"unknown GGUF type '{gguf_type}'; known: {', '.join(TYPES)}")
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise TunecraftError(f"GGUF export writes the {', '.join(ARCHITECTURES)} architecture (causal LMs such as "
                             f"SmolLM2); this model is '{model_type}'")


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order for q_proj/k_proj: HF stores each head's rotary halves apart ([x0..x_{d/2}, y0..]),
    llama.cpp interleaves them (x0, y0, x1, y1, ...). transformers' GGUF loader applies the inverse on reading."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def _encode(array: np.ndarray, gguf_type: str):
    """(data, raw GGML type or None) for one tensor; a 2-D weight whose rows do not split into whole quantization
    blocks is written f16 instead (llama.cpp's converter falls back the same way)."""
    import gguf

    if array.ndim < 2 or gguf_type == "f32":
        return array.astype(np.float32), None
    if gguf_type == "f16":
        return array.astype(np.float16), None
    qtype = getattr(gguf.GGMLQuantizationType, TYPES[gguf_type])
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if array.shape[-1] % block:
        return array.astype(np.float16), None
    return gguf.quants.quantize(array.astype(np.float32), qtype), qtype


def _tokenizer_metadata(writer, tokenizer, vocab_size: int) -> None:
    """The BPE vocabulary as llama.cpp's `get_vocab_base` lays it out: every id in order, added special tokens
    CONTROL, other added tokens USER_DEFINED, the rest NORMAL, ids the tokenizer lacks UNUSED; merges, special ids,
    the chat template."""
    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or type(backend.model).__name__ != "BPE":
        raise TunecraftError("GGUF export writes byte-level BPE tokenizers (GPT-2 style, as SmolLM2's); this "
                             "tokenizer is not one")
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(reverse[i])
        if i in added:
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    spec = json.loads(backend.to_str())
    merges = spec["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    # llama.cpp's name for the pre-tokenizer: digits split one by one first (SmolLM's original tokenizer.json)
    # is its "smollm"; byte-level alone (what transformers builds from SmolLM2's GGUF, so what runs train with)
    # is "gpt-2"
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    digits = any(p.get("type") == "Digits" and p.get("individual_digits") for p in steps)
    writer.add_tokenizer_pre("smollm" if digits else "gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(False)  # the chat template writes every special token itself
    writer.add_add_space_prefix(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def write_gguf(model, tokenizer, path: Path, gguf_type: str = "f16", name: str = "tunecraft") -> Path:
    """Write `model` (a transformers Llama causal LM) and its tokenizer to the GGUF file `path` (not atomic:
    callers write into a temporary folder)."""
    import gguf

    config = model.config
    check_exportable(config, gguf_type)
    arch = getattr(gguf.MODEL_ARCH, ARCHITECTURES[config.model_type])
    layers = config.num_hidden_layers
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    names = gguf.get_tensor_name_map(arch, layers)

    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    if rope.get("rope_type", "default") != "default":
        raise TunecraftError(f"GGUF export: rope scaling '{rope['rope_type']}' is not written by this exporter")
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(getattr(gguf.LlamaFileType, FILE_TYPES[gguf_type]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _tokenizer_metadata(writer, tokenizer, config.vocab_size)

    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # no output.weight: readers tie it to token_embd
        base, _, suffix = hf_name.rpartition(".")
        gguf_name = names.get_name(base)
        if gguf_name is None:
            raise TunecraftError(f"GGUF export: no GGUF name for the tensor '{hf_name}'")
        array = tensor.detach().to(torch.float32).cpu().numpy()
        if base.endswith("self_attn.q_proj"):
            array = _permute(array, heads)
        elif base.endswith("self_attn.k_proj"):
            array = _permute(array, kv_heads)
        data, raw = _encode(array, gguf_type)
        # a 4-bit embedding costs the most quality per byte saved: keep it 8-bit (llama.cpp keeps it ≥ 6-bit)
        if gguf_type == "q4_0" and gguf_name == "token_embd":
            data, raw = _encode(array, "q8_0")
        writer.add_tensor(f"{gguf_name}.{suffix}", data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def load_gguf(path: Path, dtype=torch.float32):
    """(model, tokenizer) read back from a GGUF file by transformers' own GGUF loader (dequantized to `dtype`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = str(Path(path).parent), Path(path).name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    return model.eval(), tokenizer
