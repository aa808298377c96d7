"""Build a model from zero: tokenizer training, pre-training objectives (MLM, NSP/SOP, causal LM), corpora."""
