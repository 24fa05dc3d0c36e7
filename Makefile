# `make test` and `make eval` set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test lint eval clean-venv

$(STAMP): requirements.txt requirements-test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt || \
		$(PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

eval: $(STAMP)
	$(PY) download.py --models dinov2 --datasets pf-willow
	$(PY) training_free_evaluation.py --model dinov2 --dataset pf-willow

clean-venv:
	rm -rf $(VENV)
