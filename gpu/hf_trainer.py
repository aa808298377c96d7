"""The reference side of gpu/check.py's speed step: the same job as tunecraft's, written as the transformers docs
show a user (a Trainer, its collators, bf16=True), minus `datasets`. Prints one `RESULT {json}` line.

    python gpu/hf_trainer.py encoder MODEL_DIR mr-train.jsonl --batch-size 64 --max-length 128
    python gpu/hf_trainer.py decoder MODEL_DIR wiki.txt --batch-size 16 --max-length 512 --steps 100
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def encoder(args) -> dict:
    """Full fine-tune of a sequence classifier for one epoch (text classification guide)."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    rows = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8").splitlines() if line.strip()]
    labels = sorted({r["label"] for r in rows})
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train = []
    for r in rows:
        row = tokenizer(r["text"], truncation=True, max_length=args.max_length)
        row["label"] = label2id[r["label"]]
        train.append(row)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    training_args = TrainingArguments(
        output_dir=args.output, learning_rate=5e-5, per_device_train_batch_size=args.batch_size,
        num_train_epochs=1, weight_decay=0.01, warmup_steps=0.06, bf16=True, use_cpu=args.cpu,
        eval_strategy="no", save_strategy="no", report_to="none", logging_steps=50, seed=42, disable_tqdm=True)
    trainer = Trainer(model=model, args=training_args, train_dataset=train,
                      data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
    result = trainer.train()
    tokens = sum(len(r["input_ids"]) for r in train)
    return {"train_seconds": result.metrics["train_runtime"], "train_tokens": tokens, "examples": len(train),
            "device": str(trainer.args.device), "final_loss": result.training_loss}


def decoder(args) -> dict:
    """Causal LM over documents joined by the end-of-text token and cut into blocks (run_clm's group_texts)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, default_data_collator

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    docs, current = [], []
    for line in Path(args.data).read_text(encoding="utf-8").splitlines():
        if line.strip():
            current.append(line.strip())
        elif current:
            docs.append(" ".join(current))
            current = []
    if current:
        docs.append(" ".join(current))
    stream = []
    for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        stream.extend(ids + [tokenizer.eos_token_id])
    n = args.max_length
    blocks = [{"input_ids": stream[i: i + n], "labels": stream[i: i + n]}
              for i in range(0, len(stream) - n + 1, n)]
    model = AutoModelForCausalLM.from_pretrained(args.model)
    training_args = TrainingArguments(
        output_dir=args.output, learning_rate=3e-4, per_device_train_batch_size=args.batch_size,
        max_steps=args.steps, weight_decay=0.01, warmup_steps=0.05, bf16=True, use_cpu=args.cpu,
        eval_strategy="no", save_strategy="no", report_to="none", logging_steps=25, seed=42, disable_tqdm=True)
    trainer = Trainer(model=model, args=training_args, train_dataset=blocks, data_collator=default_data_collator)
    result = trainer.train()
    examples = args.steps * args.batch_size
    return {"train_seconds": result.metrics["train_runtime"], "train_tokens": examples * n, "examples": examples,
            "device": str(trainer.args.device), "final_loss": result.training_loss, "blocks": len(blocks)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("job", choices=["encoder", "decoder"])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--max-length", type=int, required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--output", default=None)
    parser.add_argument("--cpu", action="store_true")
    args = parser.parse_args()
    args.output = args.output or tempfile.mkdtemp(prefix="hf-trainer-")
    result = encoder(args) if args.job == "encoder" else decoder(args)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
