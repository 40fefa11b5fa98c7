# `make demo` and `make test` set up .venv on first use (see README.md): it
# holds exactly the versions in requirements.lock, which `make lock` makes
# from requirements.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
LOCK := requirements.lock
LOCK_VENV := $(or $(TMPDIR),/tmp)/elmer_jax_lock_venv

.PHONY: demo demo-clean test test-integration test-slow test-all lock bench \
  clean

# --no-deps: the lock lists every package, so pip resolves nothing and
# installs nothing else; the build of our package uses the locked setuptools.
$(INSTALLED): $(LOCK) pyproject.toml tools/lock.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) tools/lock.py python $(LOCK)
	$(PY) -m pip install -q --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	$(PY) tools/lock.py check $(LOCK)
	touch $@

# Resolves requirements.txt afresh in a new venv and writes what it installed.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q -r requirements.txt
	$(LOCK_VENV)/bin/python tools/lock.py write $(LOCK)
	rm -rf $(LOCK_VENV)

# The tiny ELMER pretrains (LPLM) on the bundled Wikipedia sample on CPU
# (rerunning resumes from the last checkpoint; `make demo-clean` starts
# over), is exported as a Hugging Face directory and generates with PyTorch.
# Huge pages for XLA:CPU's per-step scratch memory (README: CPU hosts).
DEMO_DIR ?= demo_run
demo: $(INSTALLED)
	GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
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

# Tiers (markers in pyproject.toml): unit and parity tests by default;
# integration = training runs, CLI subprocesses, multi-process and launches;
# slow = kill/resume, base-size parity, long learning runs.
# Files run in parallel, one per core (pytest-xdist; PYTEST_WORKERS=0 runs
# them in this process), each file's tests in one worker so that a file's
# fixtures (trained runs, exports) are built once; the slowest 15 are listed.
PYTEST_WORKERS ?= auto
PYTEST := $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=15
test: $(INSTALLED)
	$(PYTEST)

test-integration: $(INSTALLED)
	$(PYTEST) -m "integration and not slow"

test-slow: $(INSTALLED)
	$(PYTEST) -m slow

test-all: $(INSTALLED)
	$(PYTEST) -m ""

bench: $(INSTALLED)
	$(PY) bench/train_throughput.py --gin_file=models/tiny.gin
	$(PY) bench/train_throughput.py --gin_file=models/base.gin --batch=2 --steps=3
	$(PY) bench/forward_backward.py --gin_file=models/tiny.gin
	$(PY) bench/forward_backward.py --gin_file=models/base.gin --batch=2 --steps=3

clean:
	rm -rf $(VENV) .pytest_cache
