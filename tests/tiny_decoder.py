"""A tiny randomly initialised Llama with SmolLM2's tokenizer (and so its chat template), saved as a local base
folder, and causal-LM runs fine-tuned from it in a few steps: fast generative runs for the serving tests."""

import json

import torch

from tunecraft.config import build_config
from tunecraft.data.chat import BUNDLED_CHAT
from tunecraft.models import resolve_base
from tunecraft.train import train

PROMPTS = ["What is AI?", "Tell me a joke.", "My internet is not working.", "hello", "Who are you?",
           "What is your favourite colour?"]


def tiny_base(folder):
    """A 2-layer, 32-wide Llama with the bundled SmolLM2 tokenizer, saved to `folder`."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_base("smollm2-135m")))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, initializer_range=0.2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def tiny_run(tmp, base, name: str, seed: int = 0, method: str = "lora", lr: float = 1e-3,
             chat_template: str | None = None):
    """A causal_lm run of a few steps on 16 chitchat conversations (each seed learns different weights)."""
    convs = [c for c in BUNDLED_CHAT["chitchat-en"]() if len(c.messages) == 2][:16]
    path = tmp / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"messages": c.messages}) + "\n" for c in convs), encoding="utf-8")
    config = build_config({
        "name": name, "output_dir": str(tmp), "seed": seed, "task": {"name": "causal_lm", "overlong": "truncate",
                 "generation": {"max_new_tokens": 12, "eval_samples": 0, "report_samples": 0}},
        "model": {"base": str(base), "max_length": 64, **({"chat_template": chat_template} if chat_template else {})},
        "data": {"dataset": None, "train": str(path), "validation": str(path), "test": str(path)},
        "method": {"name": method, **({"r": 4, "alpha": 8} if method == "lora" else {})},
        "train": {"max_steps": 3, "batch_size": 8, "lr": lr, "warmup_ratio": 0, "num_threads": 1,
                  "eval_each_epoch": False, "progress": False, "tensorboard": False}})
    train(config)
    return config.run_dir


# Driving the decode loop (serve/routes/generation.py) step by step in process, on the test's own event loop.

def decode_sequence(trained, loop, events, text, max_tokens, index=0, ids=None, **settings):
    """A Sequence for `text` (or the token `ids` given), greedy unless `temperature` is set."""
    from tunecraft.serve.routes.generation import Sequence

    ids = trained.tokenizer(text, add_special_tokens=False)["input_ids"] if ids is None else ids
    return Sequence(ids, max_tokens, settings.pop("temperature", 0.0), settings.pop("top_p", 1.0),
                    settings.pop("stops", []), False, events, loop, index=index, **settings)


def sent_events(loop, events) -> list[tuple]:
    """Every (index, event) the engine sent, in order."""
    import asyncio

    loop.run_until_complete(asyncio.sleep(0))
    out = []
    while not events.empty():
        out.append(events.get_nowait())
    return out


def decode_alone(trained, loop, text, max_tokens, **settings) -> list[int]:
    """The tokens `text` gets when it is the only sequence of a fresh decode loop."""
    import asyncio

    from tunecraft.serve.routes.generation import DecodeLoop

    seq = decode_sequence(trained, loop, asyncio.Queue(), text, max_tokens, **settings)
    engine = DecodeLoop(lambda: trained, None, 8)
    engine.waiting.append(seq)
    engine.run()
    return seq.generated
