# Two commands on a fresh machine:
#   make bench   installs everything, builds, runs the quick CPU benchmark
#   make test    installs everything, builds, runs the test suite
# If the current python3 already has torch (e.g. a GPU machine) it is used;
# otherwise a virtualenv .venv with torch==2.13.0 (CPU build) is created.
SHELL := /bin/bash
HAVE_TORCH := $(shell python3 -c "import torch" >/dev/null 2>&1 && echo 1)
ifeq ($(HAVE_TORCH),1)
PY := python3
ENV_STAMP :=
else
PY := .venv/bin/python
ENV_STAMP := .venv/.torch-installed
endif
DEPS := ninja pytest numpy expecttest hypothesis matplotlib tqdm
# tests/test_onnx.py needs these; where they cannot be installed (no network), it skips
ONNX_DEPS := onnx onnxscript onnxruntime
PYTEST_ARGS ?=

.PHONY: all deps build test bench bench-full gpu-check fuzz clean

all: test

.venv/.torch-installed:
	python3 -m venv .venv
	.venv/bin/python -m pip install -q --upgrade pip
	.venv/bin/python -m pip install -q torch==2.13.0 setuptools wheel
	touch $@

# Install only what is missing, so machines without network (GPU boxes) work.
deps: $(ENV_STAMP)
	@missing=$$(for m in $(DEPS); do $(PY) -c "import $$m" 2>/dev/null || echo $$m; done); \
	if [ -n "$$missing" ]; then echo "installing: $$missing"; $(PY) -m pip install -q $$missing; fi
	@missing=$$(for m in $(ONNX_DEPS); do $(PY) -c "import $$m" 2>/dev/null || echo $$m; done); \
	if [ -n "$$missing" ]; then echo "installing: $$missing"; \
	  $(PY) -m pip install -q --retries 1 $$missing || echo "not installed: $$missing (tests/test_onnx.py skips)"; fi

build: deps
	$(PY) setup.py -q build_ext --inplace

test: build
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

bench: build
	$(PY) -m bench --grid quick

bench-full: build
	$(PY) -m bench --grid cpu

# On a machine with a GPU and torch (no network needed): build for that GPU,
# run the CUDA tests and a quick comparison with cuDNN on both CUDA paths under
# one deadline, print a summary; see .ci/gpu_check.sh.
gpu-check:
	PY=$(PY) bash .ci/gpu_check.sh

fuzz: build
	RNN_EXT_FUZZ_EXAMPLES=3000 $(PY) -m pytest -q tests/test_property.py

clean:
	rm -rf build rnn_ext/*.so
