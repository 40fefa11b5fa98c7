# `make demo` and `make test` set up .venv on first use (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test test-slow bench clean

$(INSTALLED): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# Until the trainer lands (issue: Trainer), the demo is a forward/backward
# smoke run of the tiny model: exit sampling, copy-on-exit, LPLM loss, grads.
demo: $(INSTALLED)
	@echo "elmer_jax demo: forward/backward smoke run of the tiny ELMER (no trainer yet)"
	$(PY) bench/forward_backward.py --gin_file=models/tiny.gin --steps=5

test: $(INSTALLED)
	$(PY) -m pytest -q

test-slow: $(INSTALLED)
	$(PY) -m pytest -q -m slow

bench: $(INSTALLED)
	$(PY) bench/forward_backward.py --gin_file=models/tiny.gin
	$(PY) bench/forward_backward.py --gin_file=models/base.gin --batch=2 --steps=3

clean:
	rm -rf $(VENV) .pytest_cache
