# The two set-up commands: `make run` and `make test`. Both bootstrap .venv
# from the hash-checked lock in requirements/ (see docs/dependencies.md).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements/dev.txt

.PHONY: run test install lint bench compose-smoke lock lock-upgrade clean

$(STAMP): $(LOCK) pyproject.toml
	@# The sandbox's seccomp layer needs libseccomp (pyseccomp loads it).
	@ldconfig -p | grep -q 'libseccomp\.so\.2' || { \
		echo "installing libseccomp2 (needed by the sandbox's seccomp layer)"; \
		apt-get update -qq && apt-get install -y -qq libseccomp2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# Exact versions, every file hash-checked, wheels only: nothing is built
	@# from a source archive, so no unpinned build dependency is fetched.
	$(BIN)/python -m pip install -q --require-hashes --only-binary :all: -r $(LOCK)
	@# PAGI itself, with the locked setuptools and none of its dependencies.
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@# The sandbox's package environments (policies/envs/): built once when
	@# missing (about 20 s to a minute: the locked wheels are downloaded);
	@# without them their tools are refused with 503, the rest runs.
	@$(BIN)/pagi env build || echo "make run: a package environment could not be built;" \
		"its tools answer 503 until \`pagi env build\` succeeds"
	$(BIN)/pagi up

test: $(STAMP)
	@# A jail test builds a non-UTF-8 locale with localedef, from the locales package's sources.
	@test -e /usr/share/i18n/locales/en_US || { \
		echo "installing locales (a test builds a locale from its sources)"; \
		apt-get update -qq && apt-get install -y -qq locales; }
	@# The console's browser tests drive Debian's Chromium (no browser is downloaded).
	@test -x /usr/bin/chromium || { \
		echo "installing chromium (the console's browser tests drive it)"; \
		apt-get update -qq && apt-get install -y -qq chromium; }
	@# The memory's PostgreSQL tests start a throwaway server of their own (initdb
	@# in a temporary directory); the package's default cluster is not needed, so
	@# it is stopped if the install started it.
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
		echo "installing postgresql (the memory's tests run a throwaway PostgreSQL server)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql \
		&& { pg_lsclusters --no-header 2>/dev/null | awk '$$4 == "online" {print $$1, $$2}' \
		| while read -r version cluster; do pg_ctlcluster "$$version" "$$cluster" stop; done; }; }
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -ra

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/sandbox.py

compose-smoke: $(STAMP)
	bash scripts/compose-smoke.sh

# Refresh the lock on purpose. `make lock` keeps every pin it can and only
# adds or moves what pyproject.toml's ranges now require; `make lock-upgrade`
# moves everything to the newest release in range (or only PACKAGE, with
# `make lock-upgrade PACKAGE=name`). Both then reinstall the venv and
# regenerate proto/ with the locked grpcio-tools.
lock: $(STAMP)
	bash scripts/lock.sh
	$(MAKE) --no-print-directory install
	$(BIN)/python -m proto.generate

lock-upgrade: $(STAMP)
	bash scripts/lock.sh $(if $(PACKAGE),--upgrade-package $(PACKAGE),--upgrade)
	$(MAKE) --no-print-directory install
	$(BIN)/python -m proto.generate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
