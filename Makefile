# Two commands do all the set-up on a fresh machine:  `make run`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False
export NO_PROXY := 127.0.0.1,localhost

.PHONY: setup system-deps run test index bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned to the local CPU wheel; an unpinned torch would pull GBs of CUDA packages.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

system-deps:
	bash scripts/install-system-deps.sh

run: setup
	@# Scanned PDFs are read by OCR when Tesseract's English model is here; without it (no root, no sudo) qa
	@# still runs and says how to add it for the files that need it.
	-@bash scripts/install-system-deps.sh ocr || echo "Tesseract's English model was not installed: scanned PDFs will not be read (apt install tesseract-ocr-eng)"
	$(PY) app.py

index: setup
	$(VENV)/bin/qa index

test: setup system-deps
	$(PY) -m pytest -q

bench: setup
	$(VENV)/bin/qa bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
