# The two set-up commands: `make run` and `make test`. Both bootstrap .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench compose-smoke clean

$(STAMP): pyproject.toml
	@# The sandbox's seccomp layer needs libseccomp (pyseccomp loads it).
	@ldconfig -p | grep -q 'libseccomp\.so\.2' || { \
		echo "installing libseccomp2 (needed by the sandbox's seccomp layer)"; \
		apt-get update -qq && apt-get install -y -qq libseccomp2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/pagi up

test: $(STAMP)
	@# A jail test builds a non-UTF-8 locale with localedef, from the locales package's sources.
	@test -e /usr/share/i18n/locales/en_US || { \
		echo "installing locales (a test builds a locale from its sources)"; \
		apt-get update -qq && apt-get install -y -qq locales; }
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -ra

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/sandbox.py

compose-smoke: $(STAMP)
	bash scripts/compose-smoke.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
