# Everything runs from a project-local virtualenv that the targets create; nothing installed
# by hand is relied upon.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install compiled compiled-tree unit-compiled run run-nhn run-solapi run-failover run-console test lint unit bench profile tools docs screenshots audit clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m service.dev.demo

# The same, delivering through the local NHN-compatible SMS API (SENT/FAILED outcomes).
run-nhn: $(STAMP)
	FALLBACK_SINK=nhn $(BIN)/python -m service.dev.demo

run-solapi: $(STAMP)
	FALLBACK_SINK=solapi $(BIN)/python -m service.dev.demo

run-failover: $(STAMP)
	FALLBACK_SINK=nhn,solapi $(BIN)/python -m service.dev.demo --nhn-down

# The demo with the operator console beside it (http://127.0.0.1:8081, an account made for the
# run, printed with its password).
run-console: $(STAMP)
	$(BIN)/python -m service.dev.demo --console

lint: $(STAMP)
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy service tests bench
	$(BIN)/lint-imports --no-cache

# The tests that need no broker: seconds, for the edit-test loop.
unit: $(STAMP)
	$(BIN)/pytest -q -m "not broker"

# The opt-in compiled core (mypyc, `service.core.COMPILED`) built in place, as
# `FALLBACK_COMPILE_CORE=1 pip wheel .` builds it for the image. Importing the core refuses an
# extension not built from the source beside it; `make clean` removes them.
compiled: $(STAMP)
	FALLBACK_COMPILE_CORE=1 $(BIN)/python setup.py -q build_ext --inplace

# A copy of the working tree in .cache/compiled with the compiled core built there (the
# working tree stays pure Python): what the unit suite and the benchmarks run compiled.
COMPILED_TREE := .cache/compiled
compiled-tree: $(STAMP)
	rm -rf $(COMPILED_TREE) && mkdir -p $(COMPILED_TREE)
	git ls-files -z --cached --others --exclude-standard \
		| xargs -0 cp --parents -t $(COMPILED_TREE)
	mkdir -p .cache/bin .cache/keda $(COMPILED_TREE)/.cache
	ln -s $(CURDIR)/.cache/bin $(CURDIR)/.cache/keda $(COMPILED_TREE)/.cache/
	cd $(COMPILED_TREE) && FALLBACK_COMPILE_CORE=1 $(CURDIR)/$(BIN)/python setup.py -q build_ext --inplace

# The unit suite on the compiled core, told to check that it runs compiled code.
unit-compiled: compiled-tree
	cd $(COMPILED_TREE) && FALLBACK_TEST_EXPECT_COMPILED=1 $(CURDIR)/$(BIN)/pytest -q -p no:cacheprovider -m "not broker"

# Checkers the tests use: kustomize (built from the Go module proxy into .cache/bin), promtool
# (Debian's prometheus package) and Chromium with Korean fonts (Debian's chromium and
# fonts-noto-cjk) for the console's browser tests. Where one cannot be had, its tests say so and
# are skipped; .ci/run sets FALLBACK_TEST_REQUIRE_TOOLS=1, which makes them fail instead.
KUSTOMIZE := .cache/bin/kustomize
tools:
	@test -x $(KUSTOMIZE) || { command -v go >/dev/null \
		&& GOBIN=$(CURDIR)/.cache/bin GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1; } \
		|| echo "tools: no Go here, kustomize tests will be skipped"
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
		|| echo "tools: promtool not installable here, alert tests will be skipped"
	@{ command -v chromium >/dev/null && test -n "$$(fc-list :lang=ko 2>/dev/null)"; } || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium \
		fonts-noto-cjk >/dev/null; } \
		|| echo "tools: chromium not installable here, the console's browser tests will be skipped"

# The console's screenshots in docs/console/ (the browser tests, saving what they see).
screenshots: $(STAMP) tools
	FALLBACK_TEST_SCREENSHOTS=1 $(BIN)/pytest -q tests/test_console_browser.py

# Regenerate the committed references (tests fail when they are stale).
docs: $(STAMP)
	$(BIN)/python -m service.dev.reference
	$(BIN)/python -m service.dev.asyncapi

test: lint tools unit-compiled
	$(BIN)/pytest

# The core, pure and compiled; three runs of the service against the bare aiokafka loop on each
# broker (it rewrites the figures in docs/benchmarks.md and docs/benchmarks.png); then the
# dedupe state, a killed replica's restart, the providers, delivery results and the console's
# index and search.
bench: $(STAMP) compiled-tree
	$(BIN)/python bench/core_bench.py
	cd $(COMPILED_TREE) && $(CURDIR)/$(BIN)/python bench/core_bench.py
	$(BIN)/python bench/service_bench.py --runs 3
	$(BIN)/python bench/dedupe_bench.py
	$(BIN)/python bench/restart_bench.py
	$(BIN)/python bench/provider_bench.py --runs 3
	$(BIN)/python bench/results_bench.py --runs 3
	$(BIN)/python bench/console_bench.py --runs 3

# Where the running service spends its CPU (py-spy on `fallback-service run`, on Tansu).
profile: $(STAMP)
	$(BIN)/python bench/profile.py

# Known vulnerabilities of the installed dependencies. Needs PyPI's JSON API or OSV, which some
# mirrors (this project's build machine among them) do not serve; not part of `make test`.
audit: $(STAMP)
	$(BIN)/python -m pip install --quiet pip-audit
	@mkdir -p .cache
	$(BIN)/python -m pip freeze --exclude-editable > .cache/requirements.txt
	$(BIN)/pip-audit --requirement .cache/requirements.txt --no-deps --disable-pip

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -f service/core/*.so *__mypyc*.so service/core/compiled-sources.json
