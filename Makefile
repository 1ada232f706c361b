# emailqos: build, check and run the emailqos receiver and the otelcol-emailqos
# distribution. `make test` is the full CI gate (see .ci/run).
#
# Works from any checkout folder and with `make -C <dir>` / `make -f <dir>/Makefile`:
# every recipe runs from the repository root (ROOT).

SHELL       := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
# The `test` steps must run in the order listed, even under `make -j`.
.NOTPARALLEL:

ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

GO      ?= go
GOFMT   ?= $(shell $(GO) env GOROOT)/bin/gofmt
# Where `go install` puts binaries: GOBIN, else the first GOPATH entry's bin.
GOBIN_DIR := $(or $(shell $(GO) env GOBIN),$(firstword $(subst :, ,$(shell $(GO) env GOPATH)))/bin)

OCB_VERSION := v0.159.0
OCB_PKG     := go.opentelemetry.io/collector/cmd/builder
OCB         ?= $(GOBIN_DIR)/builder

# The receiver's Go package name. mdatagen names the package of the generated
# test files after the folder holding metadata.yaml, so `generate` runs it
# through a symlink of the repository root named like the package.
PKG := emailqosreceiver

BUILD_DIR := _build
DIST_NAME := otelcol-emailqos
DIST_DIR  := $(BUILD_DIR)/$(DIST_NAME)
DIST_BIN  := $(DIST_DIR)/$(DIST_NAME)
DEMO_BIN  := $(BUILD_DIR)/emailqos-demo

# Collector module pins: every go.opentelemetry.io/collector module and every
# contrib module in the built distribution must be at one of these.
CORE_BETA   := v0.159.0
CORE_STABLE := v1.65.0

# Files written by mdatagen (paths that do not exist are ignored).
GENERATED := internal/metadata internal/metadatatest documentation.md config.schema.yaml generated_*.go

.PHONY: test generate check-generated fmt-check vet unit precision build ocb dist check-dist-versions demo check-dist e2e integration run clean fuzz check-tool rules-test prometheus-pkg chromium-pkg demo-ui-test

## test: check-generated + fmt-check + vet + rules-test + unit + precision + build + check-dist + e2e
test: check-generated fmt-check vet rules-test unit precision build check-dist e2e

# Debian packages some targets need, installed with apt-get when missing
# (as root, as CI runs; otherwise the target says what to install). The lock
# timeout waits for another apt-get instead of failing.
APT_GET := apt-get -o DPkg::Lock::Timeout=600
define apt_install # $(1): command that must exist, $(2): Debian package
	@if command -v $(1) >/dev/null 2>&1; then \
		echo "==> $(2): using $$(command -v $(1))"; \
	elif [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "==> $(2): apt-get install $(2)"; \
		DEBIAN_FRONTEND=noninteractive $(APT_GET) update -q && \
		DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -q --no-install-recommends $(2) </dev/null; \
		command -v $(1) >/dev/null; \
	else \
		echo "FAIL: $(1) is missing: install the Debian package $(2) (sudo apt-get install $(2))"; exit 1; \
	fi
endef

## prometheus-pkg: Prometheus and promtool (Debian package prometheus; the
## package's service is not started: there may be no systemd, and make run
## and the tests start the binary themselves)
prometheus-pkg:
	$(call apt_install,promtool,prometheus)

## chromium-pkg: headless Chromium for demo-ui-test (Debian package chromium)
chromium-pkg:
	$(call apt_install,chromium,chromium fonts-dejavu-core)

## rules-test: promtool test rules on every alert rule, scenario by scenario
## (internal/opsassets/rules_test.go; the test files are left in _build/rules-test)
rules-test: prometheus-pkg
	@echo "==> rules-test: go test -tags rules -run TestAlertRulesWithPromtool ./internal/opsassets/"
	cd "$(ROOT)" && $(GO) vet -tags rules ./internal/opsassets/
	cd "$(ROOT)" && $(GO) test -tags rules -count=1 -run TestAlertRulesWithPromtool -v ./internal/opsassets/ | grep -E '^(=== RUN|\s*--- |\s+rules_test|ok|FAIL|PASS)'

## demo-ui-test: scripts/run-demo.sh with a failing mail system, its Prometheus
## and the shipped rules (time-scaled); headless Chromium checks the alerts page
## (screenshot in _build/demo-ui/), and the dashboard's queries return data
demo-ui-test: build prometheus-pkg chromium-pkg
	@echo "==> demo-ui-test: go test -tags 'e2e demoui' -run TestDemoAlertsUI ./internal/e2e/"
	cd "$(ROOT)" && EMAILQOS_COLLECTOR="$(ROOT)/$(DIST_BIN)" $(GO) test -tags 'e2e demoui' -count=1 -run TestDemoAlertsUI -timeout 10m -v ./internal/e2e/

## check-dist: scripts/check-distribution.sh on the built binary (components, validate)
check-dist:
	@echo "==> scripts/check-distribution.sh"
	cd "$(ROOT)" && DIST_BIN="$(DIST_BIN)" scripts/check-distribution.sh

## e2e: run the built otelcol-emailqos with YAML configs, as a user would (internal/e2e)
e2e:
	@echo "==> e2e: go test -tags e2e ./internal/e2e/ with $(DIST_BIN)"
	cd "$(ROOT)" && EMAILQOS_COLLECTOR="$(ROOT)/$(DIST_BIN)" $(GO) test -tags e2e -count=1 -v ./internal/e2e/

## integration: start real Postfix/Dovecot domains on loopback (scripts/mailstack.sh,
## installs them with apt-get as root), run the integration suite and the built
## collector against them, and stop them again
integration: build
	@echo "==> integration: scripts/mailstack.sh start"
	@cd "$(ROOT)"; \
	scripts/mailstack.sh start; \
	trap 'echo "==> integration: scripts/mailstack.sh stop"; scripts/mailstack.sh stop' EXIT; \
	eval "$$(scripts/mailstack.sh env)"; \
	echo "==> integration: go test -tags integration ./internal/integration/"; \
	$(GO) test -tags integration -count=1 -v ./internal/integration/; \
	echo "==> integration: go test -tags 'e2e integration' -run Mailstack ./internal/e2e/"; \
	EMAILQOS_COLLECTOR="$(ROOT)/$(DIST_BIN)" $(GO) test -tags 'e2e integration' -run Mailstack -count=1 -v ./internal/e2e/

## precision: arrival-detection precision against the in-process server, without
## the race detector (it measures goroutine timing); prints the figures
precision:
	@echo "==> precision: go test -run 'TestDetectionPrecision|TestTruth' ./internal/probe/"
	cd "$(ROOT)" && $(GO) test -count=1 -run 'TestDetectionPrecision|TestTruth' -v ./internal/probe/ | grep -E '^(=== RUN|--- |\s+precision_test|\s+truth_test|ok|FAIL|PASS)'
	@echo "==> precision: go test -run 'TestArrivalNotBiased|TestDensePollsNotPhaseLocked' ./internal/pop3watch/ (timing: not under -race)"
	cd "$(ROOT)" && $(GO) test -count=1 -run 'TestArrivalNotBiased|TestDensePollsNotPhaseLocked' -v ./internal/pop3watch/ | grep -E '^(=== RUN|--- |\s+truth_bias_test|ok|FAIL|PASS)'
	@echo "==> precision, through the shared session of each mailbox (share_session)"
	cd "$(ROOT)" && EMAILQOS_TEST_SHARE_SESSION=1 $(GO) test -count=1 -run 'TestDetectionPrecision|TestTruth' -v ./internal/probe/ | grep -E '^(=== RUN|--- |\s+precision_test|\s+truth_test|ok|FAIL|PASS)'

## generate: run mdatagen on metadata.yaml, independent of the checkout folder's name
generate:
	@echo "==> generate: go tool mdatagen metadata.yaml (as package $(PKG))"
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	ln -s "$(ROOT)" "$$tmp/$(PKG)"; \
	cd "$$tmp/$(PKG)"; \
	$(GO) tool mdatagen metadata.yaml

## check-generated: regenerate into the tree, fail if generated files changed
# In CI (CI=true, a fresh clone) any change or untracked generated file shown
# by `git status --porcelain` fails. Locally, uncommitted generated files that
# regeneration leaves as they are only warn, so work in progress is not blocked.
check-generated:
	@cd "$(ROOT)"; \
	snapshot() { for p in $(GENERATED); do if [ -e "$$p" ]; then find "$$p" -type f; fi; done | LC_ALL=C sort | xargs -r sha256sum; }; \
	before="$$(snapshot)"; \
	$(MAKE) --no-print-directory -f "$(ROOT)/Makefile" generate; \
	after="$$(snapshot)"; \
	status="$$(git status --porcelain --untracked-files=all -- $(GENERATED))"; \
	if [ "$$before" != "$$after" ] || { [ "$${CI:-}" = "true" ] && [ -n "$$status" ]; }; then \
		echo "FAIL: generated files are out of date with metadata.yaml (or not committed):"; \
		echo "$$status" | sed 's/^/    /'; \
		changed="$$(diff <(echo "$$before") <(echo "$$after") | awk '/^[<>]/ {print $$3}' | sort -u || true)"; \
		if [ -n "$$changed" ]; then echo "  changed by regeneration:"; echo "$$changed" | sed 's/^/    /'; fi; \
		echo "Run 'make generate' and commit the result."; \
		exit 1; \
	fi; \
	if [ -n "$$status" ]; then \
		echo "WARNING: generated files are up to date but not committed:"; \
		echo "$$status" | sed 's/^/    /'; \
	fi; \
	echo "PASS: generated files are up to date"

## fmt-check: gofmt -l on every Go file outside _build
fmt-check:
	@echo "==> fmt-check: gofmt -l"
	@cd "$(ROOT)"; \
	files="$$(find . \( -path ./$(BUILD_DIR) -o -path ./.git \) -prune -o -name '*.go' -type f -print0 | xargs -0 -r "$(GOFMT)" -l)"; \
	if [ -n "$$files" ]; then \
		echo "FAIL: these files need gofmt (run: gofmt -w <file>):"; echo "$$files" | sed 's/^/    /'; exit 1; \
	fi; \
	echo "PASS: gofmt"

## vet: go vet ./...
vet:
	@echo "==> vet: go vet ./..."
	cd "$(ROOT)" && $(GO) vet ./...

## unit: go test -race -count=1 ./...
unit:
	@echo "==> unit: go test -race -count=1 ./..."
	cd "$(ROOT)" && $(GO) test -race -count=1 ./...

## fuzz: run every fuzz target in turn for FUZZTIME each (default 10s; a count
## such as 30000x, as CI uses, avoids go's spurious deadline failures), with
## a hard limit of FUZZTIMEOUT per target (go test -timeout: a hang fails).
## go test -fuzz takes one target per run, so they are listed here. With the
## 12 targets the total is 12 x FUZZTIME of fuzzing plus building and replaying
## the corpora, about 2.5 min at the defaults, and never more than
## 12 x FUZZTIMEOUT (24 min) plus building. Not part of `test`.
FUZZTIME    ?= 10s
FUZZTIMEOUT ?= 2m
FUZZ_TARGETS := \
	.:FuzzConfig \
	.:FuzzSecurityAndEndpoint \
	./internal/imapwatch:FuzzHeaderToken \
	./internal/imapwatch:FuzzCandidates \
	./internal/imapwatch:FuzzTimeline \
	./internal/oauth:FuzzTokenResponse \
	./internal/pop3:FuzzReadResponse \
	./internal/probemsg:FuzzParse \
	./internal/dsn:FuzzParse \
	./internal/transcript:FuzzRedaction \
	./internal/authres:FuzzParse \
	./internal/received:FuzzParse

fuzz:
	@cd "$(ROOT)"; failed=""; \
	for t in $(FUZZ_TARGETS); do \
		pkg="$${t%%:*}"; name="$${t#*:}"; \
		echo "==> fuzz: $$name in $$pkg/ for $(FUZZTIME)"; \
		if ! $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -timeout $(FUZZTIMEOUT) "$$pkg/"; then \
			failed="$$failed $$name"; \
		fi; \
	done; \
	if [ -n "$$failed" ]; then \
		echo "FAIL: fuzz targets failed:$$failed (failing inputs are under the package's testdata/fuzz/)"; exit 1; \
	fi; \
	echo "PASS: fuzz"

## ocb: install ocb $(OCB_VERSION) with go install if it is missing or another version
ocb:
	@if [ -x "$(OCB)" ] && [[ "$$("$(OCB)" version 2>&1)" == *"$(OCB_VERSION)"* ]]; then \
		echo "==> ocb: using $(OCB) ($(OCB_VERSION))"; \
	else \
		echo "==> ocb: go install $(OCB_PKG)@$(OCB_VERSION)"; \
		$(GO) install $(OCB_PKG)@$(OCB_VERSION); \
		"$(OCB)" version; \
	fi

## build: the distribution ($(DIST_BIN)) and the demo mail system ($(DEMO_BIN))
build: dist demo check-tool

dist: ocb
	@echo "==> build: ocb --config builder-config.yaml -> $(DIST_BIN)"
	cd "$(ROOT)" && mkdir -p $(BUILD_DIR) && "$(OCB)" --config builder-config.yaml --skip-strict-versioning=false
	@$(MAKE) --no-print-directory -f "$(ROOT)/Makefile" check-dist-versions

# Fails if ocb's `go mod tidy` moved a collector or contrib module off the pins.
check-dist-versions:
	@cd "$(ROOT)/$(DIST_DIR)"; \
	mods="$$($(GO) list -m all)"; \
	drift="$$(echo "$$mods" | awk '$$1 ~ /^go\.opentelemetry\.io\/collector(\/|$$)|^github\.com\/open-telemetry\/opentelemetry-collector-contrib\// && $$2 != "$(CORE_BETA)" && $$2 != "$(CORE_STABLE)"')"; \
	if [ -n "$$drift" ]; then \
		echo "FAIL: collector modules drifted off $(CORE_BETA)/$(CORE_STABLE) in $(DIST_DIR)/go.mod:"; \
		echo "$$drift" | sed 's/^/    /'; \
		echo "Pin them in builder-config.yaml (replaces:)."; exit 1; \
	fi; \
	n="$$(echo "$$mods" | awk '$$1 ~ /^go\.opentelemetry\.io\/collector(\/|$$)|^github\.com\/open-telemetry\/opentelemetry-collector-contrib\//' | wc -l)"; \
	echo "PASS: $$n collector/contrib modules in the distribution, all at $(CORE_BETA)/$(CORE_STABLE)"

demo:
	@echo "==> build: go build -o $(DEMO_BIN) ./cmd/emailqos-demo"
	cd "$(ROOT)" && $(GO) build -o $(DEMO_BIN) ./cmd/emailqos-demo

check-tool:
	@echo "==> build: go build -o $(BUILD_DIR)/emailqos-check ./cmd/emailqos-check"
	cd "$(ROOT)" && $(GO) build -o $(BUILD_DIR)/emailqos-check ./cmd/emailqos-check

## run: build, then run the demo mail system, the collector and a Prometheus
## with the alert rules on localhost:9090 (Ctrl-C stops all three).
## DEMO_FAULT=smtp-auth (lost, cleanup, junk) breaks the mail system.
run: build prometheus-pkg
	cd "$(ROOT)" && scripts/run-demo.sh

## clean: remove build outputs
clean:
	cd "$(ROOT)" && rm -rf $(BUILD_DIR)

# ---------------------------------------------------------------------------
# Benchmarks (BENCHMARKS.md). Not part of `make test`: they measure speed and
# take minutes.

.PHONY: bench bench-tools bench-machine bench-cost bench-scale bench-mailstack bench-report

BENCHSTAT_VERSION := v0.0.0-20260908200009-22c9c6c9d4da
BENCHSTAT_PKG     := golang.org/x/perf/cmd/benchstat
BENCHSTAT         ?= $(GOBIN_DIR)/benchstat
BENCH_DIR         := $(BUILD_DIR)/bench
BENCH_SCALE_BIN   := $(BENCH_DIR)/emailqos-scale
# go test -count of the cost benchmarks (benchstat wants several runs).
BENCH_COUNT       ?= 6
# Numbers of round-trip targets of the scale runs, one process each.
BENCH_SCALE_N     ?= 1 10 100 1000
# BENCH_MAILSTACK=0 skips scripts/bench-mailstack.sh (real Postfix/Dovecot).
BENCH_MAILSTACK   ?= 1

## bench: machine, cost per probe, scale, real mail stack; splices the tables into BENCHMARKS.md
bench: bench-machine bench-cost bench-scale bench-mailstack bench-report

bench-tools:
	@mkdir -p "$(ROOT)/$(BENCH_DIR)"
	@if [ -x "$(BENCHSTAT)" ] && $(GO) version -m "$(BENCHSTAT)" 2>/dev/null | grep -q "$(BENCHSTAT_VERSION)"; then \
		echo "==> benchstat: using $(BENCHSTAT)"; \
	else \
		echo "==> benchstat: go install $(BENCHSTAT_PKG)@$(BENCHSTAT_VERSION)"; \
		$(GO) install $(BENCHSTAT_PKG)@$(BENCHSTAT_VERSION); \
	fi
	cd "$(ROOT)" && $(GO) build -o $(BENCH_SCALE_BIN) ./internal/bench/emailqos-scale

bench-machine: bench-tools
	cd "$(ROOT)" && $(BENCH_SCALE_BIN) machine > $(BENCH_DIR)/machine.md

## bench-cost: CPU per probe (BenchmarkProbe, -count $(BENCH_COUNT)) -> benchstat -> $(BENCH_DIR)/cost.md
bench-cost: bench-tools
	@echo "==> bench-cost: go test -bench BenchmarkProbe -benchmem -count $(BENCH_COUNT) ./internal/probe/"
	cd "$(ROOT)" && $(GO) test -run '^$$' -bench '^BenchmarkProbe$$' -benchmem -count $(BENCH_COUNT) -timeout 30m \
		./internal/probe/ | tee $(BENCH_DIR)/cost.txt
	@cd "$(ROOT)"; { \
		echo '```'; "$(BENCHSTAT)" -col /servers $(BENCH_DIR)/cost.txt; echo '```'; echo; \
		$(BENCH_SCALE_BIN) cost $(BENCH_DIR)/cost.txt; \
	} > $(BENCH_DIR)/cost.md.tmp && mv $(BENCH_DIR)/cost.md.tmp $(BENCH_DIR)/cost.md
	@echo "==> bench-cost: wrote $(BENCH_DIR)/cost.md"

## bench-scale: one collection of N targets per process, N in $(BENCH_SCALE_N) -> $(BENCH_DIR)/scale.md
bench-scale: bench-tools
	@cd "$(ROOT)"; \
	ulimit -n 65536 2>/dev/null || ulimit -n "$$(ulimit -Hn)"; \
	: > $(BENCH_DIR)/scale.jsonl; \
	for n in $(BENCH_SCALE_N); do \
		echo "==> bench-scale: $(BENCH_SCALE_BIN) run -n $$n"; \
		$(BENCH_SCALE_BIN) run -n $$n | tee -a $(BENCH_DIR)/scale.jsonl; \
	done; \
	n=$$(echo $(BENCH_SCALE_N) | awk '{print $$NF}'); \
	echo "==> bench-scale: $(BENCH_SCALE_BIN) run -n $$n -detection idle"; \
	$(BENCH_SCALE_BIN) run -n $$n -detection idle | tee -a $(BENCH_DIR)/scale.jsonl; \
	for args in "-spread 10s" "-spread 20s" "-spread 20s -detection idle"; do \
		echo "==> bench-scale: $(BENCH_SCALE_BIN) run -n $$n $$args"; \
		$(BENCH_SCALE_BIN) run -n $$n $$args | tee -a $(BENCH_DIR)/scale.jsonl; \
	done; \
	$(BENCH_SCALE_BIN) report $(BENCH_DIR)/scale.jsonl > $(BENCH_DIR)/scale.md; \
	echo "==> bench-scale: wrote $(BENCH_DIR)/scale.md"

bench-mailstack:
	@cd "$(ROOT)"; \
	if [ "$(BENCH_MAILSTACK)" = 0 ]; then \
		echo "==> bench-mailstack: skipped (BENCH_MAILSTACK=0)"; \
	elif [ -x scripts/bench-mailstack.sh ]; then \
		echo "==> bench-mailstack: scripts/bench-mailstack.sh"; \
		BENCH_OUT="$(ROOT)/$(BENCH_DIR)" scripts/bench-mailstack.sh; \
	else \
		echo "==> bench-mailstack: scripts/bench-mailstack.sh not present, skipped"; \
	fi

bench-report:
	cd "$(ROOT)" && BENCH_OUT="$(ROOT)/$(BENCH_DIR)" scripts/bench-report.sh

# ---------------------------------------------------------------------------
# Packages (packaging/, scripts/package*.sh): .deb and .rpm of otelcol-emailqos
# with nfpm, and an install test. Not part of `make test`.

.PHONY: package package-test nfpm

# nfpm v2.46 and later need go.digitalxero.dev modules the module proxy does
# not serve (403); v2.45.0 builds from proxy.golang.org alone.
NFPM_VERSION := v2.45.0
NFPM_PKG     := github.com/goreleaser/nfpm/v2/cmd/nfpm
NFPM         ?= $(GOBIN_DIR)/nfpm
PACKAGE_DIR  := $(BUILD_DIR)/packages

## nfpm: install nfpm $(NFPM_VERSION) with go install if it is missing or another version
nfpm:
	@if [ -x "$(NFPM)" ] && $(GO) version -m "$(NFPM)" 2>/dev/null | grep -q "$(NFPM_VERSION)"; then \
		echo "==> nfpm: using $(NFPM) ($(NFPM_VERSION))"; \
	else \
		echo "==> nfpm: go install $(NFPM_PKG)@$(NFPM_VERSION)"; \
		$(GO) install $(NFPM_PKG)@$(NFPM_VERSION); \
	fi

## package: .deb and .rpm of otelcol-emailqos and emailqos-check in $(PACKAGE_DIR)
## (builds the distribution first when $(DIST_BIN) is missing)
package: nfpm
	@cd "$(ROOT)"; if [ ! -x "$(DIST_BIN)" ]; then $(MAKE) --no-print-directory -f "$(ROOT)/Makefile" dist; fi
	cd "$(ROOT)" && NFPM="$(NFPM)" GO="$(GO)" scripts/package.sh

## package-test: as root on Debian: install the .deb, check user, files, unit and
## config, purge it and check nothing is left; inspect the .rpm
package-test: package
	cd "$(ROOT)" && scripts/package-test.sh

.PHONY: soak
## soak: thousands of probes against in-process servers, healthy and faulty,
## driven collection after collection; fails if goroutines or heap grow by
## more than 10% after the warm-up, and prints the figures (about a minute)
soak:
	@echo "==> soak: go test -tags soak -run TestSoak ./ (prints goroutines, heap, probes/s)"
	cd "$(ROOT)" && $(GO) test -tags soak -count=1 -run '^TestSoak$$' -timeout 10m -v .

# ---------------------------------------------------------------------------
# Container image (packaging/Containerfile) and its end-to-end test. Not part
# of `make test`: .ci/run runs `make image-e2e` after it.

.PHONY: image image-e2e podman-tools

DIST_VERSION := $(shell awk '$$1 == "version:" {print $$2; exit}' "$(ROOT)/builder-config.yaml")
IMAGE_NAME   ?= localhost/otelcol-emailqos
IMAGE_TAG    ?= $(DIST_VERSION)
IMAGE        ?= $(IMAGE_NAME):$(IMAGE_TAG)
IMAGE_DIR    := $(BUILD_DIR)/image
PODMAN       ?= podman
# podman reads only this file when CONTAINERS_CONF is set; see its comments.
PODMAN_ENV   := CONTAINERS_CONF="$(ROOT)/packaging/container/containers.conf"

## podman-tools: install podman, runc and ca-certificates with apt-get when missing
podman-tools:
	@missing=(); \
	command -v $(PODMAN) >/dev/null 2>&1 || missing+=(podman); \
	command -v runc >/dev/null 2>&1 || missing+=(runc); \
	[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates); \
	if [ "$${#missing[@]}" -eq 0 ]; then \
		echo "==> podman-tools: using $$(command -v $(PODMAN)) ($$($(PODMAN) --version)), $$(command -v runc)"; \
	else \
		SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		echo "==> podman-tools: apt-get install $${missing[*]}"; \
		$$SUDO apt-get -o DPkg::Lock::Timeout=600 update -q; \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$${missing[@]}" </dev/null; \
	fi

## image: container image $(IMAGE) of the distribution (podman, FROM scratch:
## the static binary, CA certificates, user 10001, /etc/otelcol-emailqos/config.yaml)
image: dist podman-tools
	@echo "==> image: CGO_ENABLED=0 go build -> $(IMAGE_DIR)/otelcol-emailqos"
	@cd "$(ROOT)"; rm -rf $(IMAGE_DIR); mkdir -p $(IMAGE_DIR); \
	(cd $(DIST_DIR) && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o "$(ROOT)/$(IMAGE_DIR)/otelcol-emailqos" .); \
	cp packaging/container/passwd packaging/container/group packaging/container/config.yaml $(IMAGE_DIR)/; \
	cp /etc/ssl/certs/ca-certificates.crt $(IMAGE_DIR)/
	@echo "==> image: $(PODMAN) build -> $(IMAGE)"
	cd "$(ROOT)" && $(PODMAN_ENV) $(PODMAN) build --layers=false --runtime runc --network host \
		-f packaging/Containerfile -t $(IMAGE) \
		--build-arg VERSION=$(DIST_VERSION) \
		--build-arg REVISION="$$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
		--build-arg CREATED="$$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
		$(IMAGE_DIR)
	@cd "$(ROOT)" && $(PODMAN_ENV) $(PODMAN) image inspect $(IMAGE) \
		--format 'PASS: image {{index .RepoTags 0}}, {{.Size}} bytes, user {{.Config.User}}'

## image-e2e: run the image with podman against the demo mail system and read its
## Prometheus exporter (go test -tags 'e2e image' ./internal/e2e/)
image-e2e: image demo
	@echo "==> image-e2e: go test -tags 'e2e image' -run TestImage ./internal/e2e/ with $(IMAGE)"
	cd "$(ROOT)" && $(PODMAN_ENV) EMAILQOS_IMAGE="$(IMAGE)" EMAILQOS_DEMO="$(ROOT)/$(DEMO_BIN)" \
		EMAILQOS_COLLECTOR="$(ROOT)/$(DIST_BIN)" \
		$(GO) test -tags 'e2e image' -count=1 -v -timeout 10m -run 'TestImage' ./internal/e2e/
