# orch — build, run, test, lint, bench, install.
CARGO   ?= cargo
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  := $(DESTDIR)$(PREFIX)/bin
UNITDIR := $(DESTDIR)/etc/systemd/system
CONFDIR := $(DESTDIR)/etc/orch
DOCDIR  := $(DESTDIR)$(PREFIX)/share/doc/orch

BIN     ?= target/release/orch

.PHONY: all build run test lint fuzz bench install install-files clean

all: build

## build: the release binary at target/release/orch
build:
	$(CARGO) build --release

## run: a dev agent (server + client, data in a temp dir) on 127.0.0.1:4747
run: build
	@echo "In another terminal: ./target/release/orch job run jobspecs/hello.toml"
	./target/release/orch agent --dev

## test: every unit and integration test (nextest when installed)
test:
	$(CARGO) build --workspace --all-targets
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

## fuzz: the fuzz targets of tests/fuzz.rs (also in `make test`, shorter) for longer:
##       FUZZ_ITERATIONS per target (default 1000000), FUZZ_SEED to explore elsewhere;
##       a crash's input is saved under target/fuzz-crashes/
FUZZ_ITERATIONS ?= 1000000
fuzz:
	FUZZ_ITERATIONS=$(FUZZ_ITERATIONS) $(CARGO) test --release --test fuzz -- --test-threads 1

## lint: formatting and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## bench: the cluster benchmark (real agents and tasks, as root), then the scheduler
##        and garbage-collection benchmarks; one `name value unit` line per result.
##        BENCH=c1m|packing|full_cluster|gc|recovery|e2e|footprint|ha|ha.c1m runs one
##        part (ha: the replicated figures, agents' and ha.c1m's);
##        SCALE=0.1 shrinks the scheduler's and the collector's
BENCH   ?=
SCALE   ?= 1
SCHEDULER_PARTS := c1m packing full_cluster ha.c1m
CLUSTER_PARTS   := recovery e2e footprint ha
# The cluster benchmark (latencies of real agents) runs first: the scheduler's and the
# collector's leave a gigabyte of SQLite just written and deleted behind them.
bench:
	@if [ -z "$(BENCH)" ] || echo "$(CLUSTER_PARTS)" | grep -qw "$(BENCH)"; then \
		BENCH=$(BENCH) $(CARGO) bench -p orch --bench cluster; fi
	@if [ -z "$(BENCH)" ] || echo "$(SCHEDULER_PARTS)" | grep -qw "$(BENCH)"; then \
		BENCH=$(BENCH) SCALE=$(SCALE) $(CARGO) bench -p orch-server --bench scheduler; fi
	@if [ -z "$(BENCH)" ] || [ "$(BENCH)" = gc ]; then \
		SCALE=$(SCALE) $(CARGO) bench -p orch-server --bench gc; fi

## install: binary, systemd units and (unless present) example configs
install: build install-files

## install-files: the copying part of install, for an already built $(BIN)
install-files:
	install -d $(BINDIR) $(UNITDIR) $(CONFDIR) $(DOCDIR)
	install -m 0755 $(BIN) $(BINDIR)/orch
	install -m 0755 $(BIN)-task-shim $(BINDIR)/orch-task-shim
	install -m 0644 deploy/systemd/orch-server.service $(UNITDIR)/orch-server.service
	install -m 0644 deploy/systemd/orch-client.service $(UNITDIR)/orch-client.service
	@for f in server.toml client.toml; do \
		if [ -e $(CONFDIR)/$$f ]; then \
			echo "keeping existing $(CONFDIR)/$$f"; \
		else \
			install -m 0644 deploy/$$f $(CONFDIR)/$$f; \
		fi; \
	done
	install -m 0644 docs/operations.md $(DOCDIR)/operations.md
	install -m 0644 docs/security.md $(DOCDIR)/security.md

clean:
	$(CARGO) clean
