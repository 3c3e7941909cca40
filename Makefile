# Two commands: `make run` (set up on first use, then the whole pipeline on built-in data) and
# `make test` (set up on first use, then the tests). Set-up is idempotent: a stamp keyed by the lock
# file's hash makes it a no-op when nothing changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
LOCK_HASH := $(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-12)
STAMP := $(VENV)/.setup-$(LOCK_HASH)
TEST_STAMP := $(VENV)/.setup-test-$(shell cat requirements-test.lock | sha256sum | cut -c1-12)
# Debian packages the tests start for real on loopback (Prometheus server + pushgateway, an image registry).
TEST_DEBS := prometheus prometheus-pushgateway docker-registry
export PATH := $(BIN):$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup setup-test run test test-unit bench compile clean images registry-screenshot

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@echo "setup: creating $(VENV) (first use only)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: the CPU build of 2.13.0; every later range it satisfies installs nothing more.
	$(BIN)/pip install -q torch==2.13.0
	# --require-hashes: only the files tools/hash_lock.py recorded install (torch, above, is not in the lock)
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	rm -f $(VENV)/.setup-* && touch $@

# What only the tests add (pytest, moto, kubernetes-validate, hadolint, transformers): never in an image.
$(TEST_STAMP): requirements-test.lock $(STAMP)
	$(BIN)/pip install -q --require-hashes -r requirements-test.lock
	rm -f $(VENV)/.setup-test-* && touch $@

setup-test: setup $(TEST_STAMP)
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing$$missing (Debian packages the tests run on loopback)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# One MLflow parent run per `make run` (videossl.tracking): its steps are the children.
run: setup
	VIDEOSSL_PIPELINE_RUN="make-run-$$(date -u +%Y%m%dT%H%M%SZ)-$$$$" dvc repro
	videossl summary --eval outputs/eval --register outputs/register

# The suite in TEST_WORKERS processes (pytest-xdist), whole files per process so each file's fixtures
# are built once: most of its time is spent waiting on subprocesses and servers, so two share 2 cores.
TEST_WORKERS ?= 2
test: setup-test
	pytest -q -n $(TEST_WORKERS) --dist loadfile

# The inner loop: tests/unit only (no ingest, torchrun or servers), in one process.
test-unit: setup
	pytest -q tests/unit

# Peer benchmarks (benchmarks/): the `bench` extra of pyproject.toml, installed with torch held where it is.
bench: setup-test  # bench_stream.py starts moto, a test tool, as its S3 server
	$(BIN)/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]))' > $(VENV)/bench-requirements.txt
	$(BIN)/pip install -q -r $(VENV)/bench-requirements.txt -c <(echo torch==2.13.0)
	$(BIN)/python -c 'import torch; assert torch.__version__.startswith("2.13.0"), torch.__version__'
	python benchmarks/bench_train_step.py
	python benchmarks/bench_loader.py
	python benchmarks/bench_ingest.py
	python benchmarks/bench_stream.py

# A manual check, not a test: the MLflow registered-model and version pages of the registry `make run`
# filled, as headless Chromium draws them (docs/registry-*.png). Chromium is too heavy for `make test`.
registry-screenshot: setup
	@dpkg -s chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	python tools/registry_screenshot.py

compile: setup
	videossl pipeline compile --out pipeline.yaml

# Container images (containers/), tagged from params.yaml cluster.image / cluster.trainer_image,
# built with the first working engine: docker, else podman (a CLI whose daemon is unreachable does
# not count); CONTAINER_ENGINE=podman forces one. linux/amd64 because decord publishes x86-64 wheels
# only. Pushing is a separate step (README "Run on a cluster", step 1).
images: setup
	@engine="$${CONTAINER_ENGINE:-}"; \
	if [ -z "$$engine" ]; then \
	  for e in docker podman; do \
	    if command -v "$$e" >/dev/null && "$$e" info >/dev/null 2>&1; then engine="$$e"; break; fi; \
	  done; \
	fi; \
	if [ -z "$$engine" ]; then \
	  echo "images: no working container engine: neither docker nor podman is installed with a reachable daemon ('docker info' / 'podman info' fail). Install one (or set CONTAINER_ENGINE) and run 'make images' again." >&2; \
	  exit 1; \
	fi; \
	tags=$$($(BIN)/python -c 'from videossl.config import load_config; c = load_config("params.yaml").cluster; print(c.image, c.trainer_image)') || exit 1; \
	read -r pipeline trainer <<< "$$tags"; \
	commit=$$(git rev-parse HEAD 2>/dev/null || echo unknown); \
	echo "images: building $$pipeline and $$trainer with $$engine"; \
	"$$engine" build --platform linux/amd64 --build-arg VIDEOSSL_GIT_COMMIT="$$commit" -f containers/Dockerfile.pipeline -t "$$pipeline" . && \
	"$$engine" build --platform linux/amd64 --build-arg VIDEOSSL_GIT_COMMIT="$$commit" -f containers/Dockerfile.trainer -t "$$trainer" .

clean:
	rm -rf outputs data/ingest mlruns.db mlartifacts
