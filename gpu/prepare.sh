#!/usr/bin/env bash
# Fill gpu/carry/ (git-ignored) with what gpu/check.sh needs on a bare GPU machine that has no network and no
# tunecraft cache: the wheels its image lacks, for Python 3.12 / manylinux x86_64, and the check's data (mr as
# JSONL, the wiki-en text, BERT's WordPiece tokenizer, a byte-level BPE tokenizer trained on that text).
#   bash gpu/prepare.sh          # here, where tunecraft and its bundled assets are installed (make install)
# The device tool then carries it: run(command="bash gpu/check.sh", carry=["gpu/carry"], timeout_s=540).
# Everything that travels (tracked files + gpu/carry) must stay under 64 MiB; the script prints the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CARRY=gpu/carry
rm -rf "$CARRY"
mkdir -p "$CARRY/wheels"

# The image (torch 2.11, transformers 5.17, accelerate 1.15, peft, tokenizers, safetensors, scikit-learn, pyyaml,
# numpy, matplotlib, tqdm, huggingface_hub) lacks these, which tunecraft's training path imports, and
# bitsandbytes for QLoRA (its one wheel holds the CUDA 11.8-13.2 libraries: ~41 MiB). Pinned to the versions
# of constraints.txt where it pins them. --no-deps: tunecraft's own pins (transformers>=5.24) must not pull
# anything over the image's packages.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$CARRY/wheels" \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  typing-extensions==4.16.0 bitsandbytes==0.50.2
# seqeval (imported by the NER task at import time) has no wheel on PyPI: build its pure-Python one here
"$PY" -m pip wheel -q --no-deps --no-binary=:all: -w "$CARRY/wheels" seqeval==1.2.2

"$PY" gpu/check.py export-data "$CARRY/data" >/dev/null

du -sh "$CARRY/wheels" "$CARRY/data"
# what travels besides the carry: tracked files and untracked ones that git does not ignore
tracked=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb | tail -1 | cut -f1)
carried=$(du -sb "$CARRY" | cut -f1)
total=$((tracked + carried))
echo "working tree $((tracked / 1024)) KiB + gpu/carry $((carried / 1024)) KiB = $((total / 1048576)) MiB (limit 64 MiB)"
[ "$total" -lt $((64 * 1048576)) ] || { echo "over the 64 MiB the device tool carries" >&2; exit 1; }
