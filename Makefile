# The whole set-up of a fresh Debian 12 machine is `make test` (or `make demo`).
# Each step is idempotent and skipped when already done.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := mosquitto mosquitto-clients libsystemd-dev pkg-config gcc python3-dev linux-libc-dev \
	zint strace poppler-utils orthanc orthanc-dicomweb dicom3tools
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck pytest demo bench system-packages clean

test: lint typecheck pytest

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml | system-packages
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,systemd,dicom]' --config-settings editable_mode=strict
	touch $(STAMP)

# Reinstall when a module is added (strict editable mode links files, not folders).
install: system-packages $(STAMP)
	@new=$$(find protocol drivers daemon gateway provisioning -name '*.py' -newer $(STAMP) | head -1); \
	if [ -n "$$new" ]; then $(BIN)/pip install -q -e '.[dev,systemd,dicom]' --config-settings editable_mode=strict && touch $(STAMP); fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy -p photosafe.protocol -p photosafe.drivers -p photosafe.daemon -p photosafe.gateway -p photosafe.provisioning
	$(BIN)/mypy tests

pytest: install
	$(BIN)/pytest -q -p no:cacheprovider

demo: install
	$(BIN)/python -m photosafe.provisioning.demo $(if $(DIR),--dir $(DIR),) $(if $(PACS),--pacs $(PACS),)

# Benchmarks report ratios to a floor measured in the same run; they never gate CI.
bench: install
	$(BIN)/python tests/bench/run.py $(if $(OUT),--out $(OUT),)

clean:
	rm -rf $(VENV) build *.egg-info
