# `make demo` and `make test` set up .venv on first use (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo demo-clean test test-slow bench clean

$(INSTALLED): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# The tiny ELMER pretrains (LPLM) on the bundled Wikipedia sample on CPU
# (rerunning resumes from the last checkpoint; `make demo-clean` starts
# over), is exported as a Hugging Face directory and generates with PyTorch.
DEMO_DIR ?= demo_run
demo: $(INSTALLED)
	XLA_FLAGS=--xla_force_host_platform_device_count=2 $(PY) -m elmer_jax.train \
	  --gin_file=experiments/demo_sample_tiny.gin --model_dir=$(DEMO_DIR)
	$(PY) -m elmer_jax.export --model_dir=$(DEMO_DIR) \
	  --output_dir=$(DEMO_DIR)/hf --overwrite
	HF_HUB_OFFLINE=1 $(PY) -m elmer_jax.export.hf_generate \
	  --hf_dir=$(DEMO_DIR)/hf --exit_threshold=2.0 \
	  --text="The city is the capital of the country and its largest port." \
	  --text="He was born in London and studied music."

demo-clean:
	rm -rf $(DEMO_DIR)

test: $(INSTALLED)
	$(PY) -m pytest -q

test-slow: $(INSTALLED)
	$(PY) -m pytest -q -m slow

bench: $(INSTALLED)
	$(PY) bench/train_throughput.py --gin_file=models/tiny.gin
	$(PY) bench/train_throughput.py --gin_file=models/base.gin --batch=2 --steps=3
	$(PY) bench/forward_backward.py --gin_file=models/tiny.gin
	$(PY) bench/forward_backward.py --gin_file=models/base.gin --batch=2 --steps=3

clean:
	rm -rf $(VENV) .pytest_cache
