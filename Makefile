# Two commands: `make run` (the app on devhost at http://localhost:7071) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PORT ?= 7071
REQUIREMENTS := requirements.txt requirements-dev.txt requirements-local-model.txt requirements-test.txt pyproject.toml

.PHONY: run test bench install clean

$(PY):
	python3 -m venv $(VENV)

# llama-cpp-python compiles llama.cpp on first install: several minutes, once (pip caches the wheel).
$(STAMP): $(REQUIREMENTS) | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install --quiet \
		-r requirements-dev.txt -r requirements-local-model.txt -r requirements-test.txt
	touch $(STAMP)

install: $(STAMP)

local.settings.json:
	cp local.settings.sample.json local.settings.json

run: $(STAMP) local.settings.json
	$(PY) -m devhost start --app . --port $(PORT)

test: $(STAMP)
	bash scripts/ensure-chromium.sh
	bash scripts/ensure-azurite.sh
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .devhost .pytest_cache
bench-peers: $(STAMP) ; $(PY) -m bench.peers $(BENCH_ARGS)
