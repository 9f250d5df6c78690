# Overcast: the two commands a user needs are `make demo` and `make test`.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Build caches live outside the clone, so fresh clones and CI reuse them.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/overcast/target
export GOCACHE ?= $(HOME)/.cache/go-build
export CARGO_TERM_COLOR ?= never
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
CARGO_LOCKED := $(if $(CI),--locked,)

.PHONY: help
help:
	@echo "make demo       a real cluster on this machine, overcast-ccm, a LoadBalancer Service and curl through its VIP"
	@echo "make demo-lite  the same on a bare control plane, without root"
	@echo "make test       install what is missing, then fmt, clippy, unit and integration tests"
	@echo "make testenv    build the pinned Kubernetes components, etcd and the node images into testenv/bin"
	@echo "make cluster    a real cluster (kubelets, kube-proxy, scheduler) until Ctrl-C"
	@echo "make csi-manifest  regenerate deploy/csi/overcast-csi.yaml from the overcast-csi chart"
	@echo "make lint       cargo fmt --check and clippy -D warnings"
	@echo "make bench      bench-scale (overcast-ccm vs the Go CCM), bench-proxy (local LB vs HAProxy), bench-failover (VIP failover), bench-csi (overcast-csi vs local-path-provisioner)"
	@echo "make semver     the published crates' API against SEMVER_BASELINE (cargo-semver-checks)"
	@echo "make fuzz       cargo fuzz (nightly) each parser for FUZZ_SECONDS; new inputs join fuzz/corpus (seeds in fuzz/seeds)"

.PHONY: prerequisites
prerequisites:
	@command -v $(CARGO) >/dev/null || { echo "make: Rust (cargo) is required: https://rustup.rs" >&2; exit 1; }
	@command -v go >/dev/null || { echo "make: Go >= 1.26 is required to build the test control plane: https://go.dev/dl" >&2; exit 1; }
	@command -v $(PYTHON) >/dev/null || { echo "make: Python 3 is required for the cloud emulators" >&2; exit 1; }
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy

# What the test cluster's nodes run besides the Go components (Debian's
# packages; ../shared/reference/real-nodes.md): containerd and runc, the CNI
# plugins, iptables and conntrack for kube-proxy, busybox-static for the
# images, a registry with htpasswd for the credential-provider tests, and the
# filesystems overcast-csi formats and grows (e2fsprogs, xfsprogs).
NODE_PACKAGES := containerd runc containernetworking-plugins iptables conntrack iproute2 \
  busybox-static docker-registry apache2-utils e2fsprogs xfsprogs
.PHONY: node-packages
node-packages:
	@missing=$$(for p in $(NODE_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing the test nodes' packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

.PHONY: testenv
testenv: prerequisites node-packages
	testenv/build.sh

# Only what a real cluster needs (no helm): what `make demo` builds.
.PHONY: testenv-cluster
testenv-cluster: prerequisites node-packages
	testenv/build.sh kube etcd

# Regenerate the Go wrapper modules after changing testenv/versions.env.
.PHONY: testenv-update
testenv-update:
	testenv/update-modules.sh

# deploy/csi/overcast-csi.yaml: the overcast-csi chart rendered with its
# defaults, for a user without Helm (crates/csi/tests/chart.rs checks it is current).
.PHONY: csi-manifest
csi-manifest:
	testenv/render-csi-manifest.sh > deploy/csi/overcast-csi.yaml

# A Python virtualenv for the cloud emulators (moto) the provider tests start.
$(VENV)/.stamp: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: venv
venv: prerequisites $(VENV)/.stamp

# Tests build every provider, the AWS SDK ones included (debug builds; the
# release builds of demo and benchmarks leave them out).
TEST_FEATURES := --features overcast-ccm/aws

.PHONY: lint
lint: prerequisites
	$(CARGO) fmt --all --check
	$(CARGO) clippy $(CARGO_LOCKED) --workspace --all-targets $(TEST_FEATURES) -- -D warnings

# One build serves clippy and the tests: clippy-driver compiles the
# workspace's own crates as `cargo clippy` runs it (lints, -D warnings), but
# on to the test binaries instead of check-only metadata that the test build
# would compile again; dependencies are compiled by rustc as usual. (A plain
# `cargo test` afterwards recompiles the workspace's crates, not their
# dependencies: the wrapper is part of their fingerprint.)
CLIPPY_DRIVER = $(shell rustup which clippy-driver 2>/dev/null || command -v clippy-driver)
TEST_ENV = RUSTC_WORKSPACE_WRAPPER="$(CLIPPY_DRIVER)" CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__ \
  PATH="$(CURDIR)/$(VENV)/bin:$$PATH" OVERCAST_GO_CCM="$(GO_CCM)"
# Test binaries run TEST_JOBS at a time (testenv/run-tests.py).
TEST_JOBS ?= 3

# The upstream Go CCM (bench/go-ccm): the mixed-pair tests run it beside
# overcast-ccm, and the scale benchmark against it.
GO_CCM := $(HOME)/.cache/overcast/go-ccm

# The crates a vendor depends on, packaged as crates.io would take them
# (manifest, metadata, file list). Not verified by a build of the packages:
# that rebuilds every dependency in a workspace of its own (6 min warm, measured
# with `cargo package` for these six), and the workspace build below builds
# the same sources.
PUBLISHED := -p overcast-cloud-provider -p overcast-controllers -p overcast-provider-fake \
	-p overcast-provider-local -p overcast-provider-aws -p overcast-ccm

.PHONY: package
package:
	$(CARGO) package $(PUBLISHED) --no-verify --allow-dirty

# The published crates' API against the commit it was last released or
# agreed at (SEMVER_BASELINE), with cargo-semver-checks from crates.io
# (installed on first use: 5m38s on this machine). About a minute per crate,
# so not part of `make test`; run it before changing the published API, and
# move SEMVER_BASELINE forward with a release.
SEMVER_BASELINE ?= 2240fd7
SEMVER_CHECKS := $(HOME)/.cache/semver-checks/bin/cargo-semver-checks
.PHONY: semver
semver:
	@test -x $(SEMVER_CHECKS) || $(CARGO) install cargo-semver-checks --locked --root $(HOME)/.cache/semver-checks
	$(SEMVER_CHECKS) semver-checks $(PUBLISHED) --baseline-rev $(SEMVER_BASELINE) --all-features

.PHONY: test
test: testenv venv $(GO_CCM)
	$(CARGO) fmt --all --check
	$(CARGO) package $(PUBLISHED) --no-verify --allow-dirty
	@test -x "$(CLIPPY_DRIVER)" || { echo "make: clippy-driver not found (rustup component add clippy)" >&2; exit 1; }
	$(TEST_ENV) TEST_JOBS=$(TEST_JOBS) $(PYTHON) testenv/run-tests.py $(CARGO_LOCKED) --workspace --all-targets $(TEST_FEATURES)
	$(TEST_ENV) $(CARGO) test $(CARGO_LOCKED) --workspace --doc $(TEST_FEATURES)

BENCH_NODES ?= 1000
BENCH_SERVICES ?= 1000
BENCH_PROFILE ?= lifted
# Non-empty: the Services churn (created, updated, deleted) while the Nodes join.
BENCH_CHURN ?=
BENCH_OUT ?= bench/results/$(shell date +%Y-%m-%d)-scale.md

# The upstream Go cloud-controller-manager with the benchmark's fake cloud.
# Coverage-guided fuzzing of the parsers of user and kubelet input; the
# corpora it grows are replayed on stable by each crate's tests/corpus.rs.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := go_duration local_config fake_config credential_request static_credentials
.PHONY: fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  CARGO_TARGET_DIR=$(HOME)/.cache/overcast/fuzz-target cargo +nightly fuzz run -s none $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096 || exit 1; \
	done

.PHONY: go-ccm
go-ccm: $(GO_CCM)
$(GO_CCM): bench/go-ccm/main.go bench/go-ccm/go.mod bench/go-ccm/go.sum
	cd bench/go-ccm && CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local go build -trimpath -o $(GO_CCM) .

# overcast-ccm against the Go CCM on the same (fresh) apiserver; appends to $(BENCH_OUT).
.PHONY: bench-scale
bench-scale: testenv-cluster go-ccm
	$(CARGO) build --release -p overcast-ccm -p overcast-bench
	BENCH_NODES=$(BENCH_NODES) BENCH_SERVICES=$(BENCH_SERVICES) BENCH_PROFILE=$(BENCH_PROFILE) BENCH_CHURN=$(BENCH_CHURN) bench/record-header.sh "$(BENCH_OUT)"
	$(CARGO_TARGET_DIR)/release/overcast-bench --overcast $(CARGO_TARGET_DIR)/release/overcast-ccm \
	  --go $(GO_CCM) --nodes $(BENCH_NODES) --services $(BENCH_SERVICES) --profile $(BENCH_PROFILE) \
	  $(if $(BENCH_CHURN),--churn) --out "$(BENCH_OUT)"

# The local provider's built-in load balancer against HAProxy (Debian's
# package, installed here when missing) in front of the same backends.
BENCH_PROXY_SECONDS ?= 10
BENCH_PROXY_OUT ?= bench/results/$(shell date -u +%Y-%m-%d)-proxy.md
.PHONY: bench-proxy
bench-proxy: testenv-cluster
	@command -v haproxy >/dev/null || command -v /usr/sbin/haproxy >/dev/null || \
	  { echo "installing haproxy (Debian package)"; apt-get install -y haproxy >/dev/null; }
	$(CARGO) build --release -p overcast-ccm -p overcast-proxy-bench
	bench/record-header.sh "$(BENCH_PROXY_OUT)" "make bench-proxy BENCH_PROXY_SECONDS=$(BENCH_PROXY_SECONDS)"
	$(CARGO_TARGET_DIR)/release/overcast-proxy-bench --overcast $(CARGO_TARGET_DIR)/release/overcast-ccm \
	  --haproxy $$(command -v haproxy || echo /usr/sbin/haproxy) --seconds $(BENCH_PROXY_SECONDS) --out "$(BENCH_PROXY_OUT)"

# VIP failover on a real two-node cluster: SIGKILL and SIGTERM to the leading
# overcast-ccm while a client outside sends a request every 10 ms. Needs root.
# BENCH_FAILOVER_ARGS passes leader-election settings and --vip-lifetime.
BENCH_FAILOVER_ROUNDS ?= 6
BENCH_FAILOVER_ARGS ?=
BENCH_FAILOVER_OUT ?= bench/results/$(shell date -u +%Y-%m-%d)-failover.md
.PHONY: bench-failover
bench-failover: testenv-cluster
	$(CARGO) build --release -p overcast-ccm -p overcast-failover-bench --bin overcast-ccm --bin overcast-failover-bench
	bench/record-header.sh "$(BENCH_FAILOVER_OUT)" "make bench-failover BENCH_FAILOVER_ROUNDS=$(BENCH_FAILOVER_ROUNDS) BENCH_FAILOVER_ARGS='$(BENCH_FAILOVER_ARGS)'"
	$(CARGO_TARGET_DIR)/release/overcast-failover-bench --overcast $(CARGO_TARGET_DIR)/release/overcast-ccm \
	  --rounds $(BENCH_FAILOVER_ROUNDS) $(BENCH_FAILOVER_ARGS) --out "$(BENCH_FAILOVER_OUT)"

.PHONY: bench
# overcast-csi (driver + external-provisioner) against rancher's
# local-path-provisioner (built from the Go module proxy): claims to Bound,
# Pods Running, deletion, peak RSS, on one real node.
LOCAL_PATH_PROVISIONER_VERSION := v0.0.30
LOCAL_PATH_PROVISIONER := $(HOME)/.cache/overcast/bin/local-path-provisioner-$(LOCAL_PATH_PROVISIONER_VERSION)
BENCH_CSI_CLAIMS ?= 30
BENCH_CSI_OUT ?= bench/results/$(shell date -u +%Y-%m-%d)-csi.md
$(LOCAL_PATH_PROVISIONER):
	mkdir -p $(dir $@)/local-path
	cd /tmp && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod GOBIN=$(dir $@)/local-path \
	  go install -trimpath github.com/rancher/local-path-provisioner@$(LOCAL_PATH_PROVISIONER_VERSION)
	mv $(dir $@)/local-path/local-path-provisioner $@
.PHONY: bench-csi
bench-csi: testenv $(LOCAL_PATH_PROVISIONER)
	$(CARGO) build --release -p overcast-csi -p overcast-csi-bench
	bench/record-header.sh "$(BENCH_CSI_OUT)" "make bench-csi BENCH_CSI_CLAIMS=$(BENCH_CSI_CLAIMS)"
	$(CARGO_TARGET_DIR)/release/overcast-csi-bench --csi $(CARGO_TARGET_DIR)/release/overcast-csi \
	  --local-path $(LOCAL_PATH_PROVISIONER) --claims $(BENCH_CSI_CLAIMS) --out "$(BENCH_CSI_OUT)"

bench: bench-scale bench-proxy bench-failover bench-csi

# The local provider end to end on a real cluster: nodes with kubelets and
# kube-proxy, overcast-ccm, a Deployment, a LoadBalancer Service and requests
# through its VIP from outside; stops and removes what it started. Needs root.
.PHONY: demo
demo: testenv-cluster
	$(CARGO) build $(CARGO_LOCKED) --release -p overcast-ccm -p overcast-demo --bin overcast-ccm --bin demo
	OVERCAST_CCM=$(CARGO_TARGET_DIR)/release/overcast-ccm $(CARGO_TARGET_DIR)/release/demo

# The same on a bare control plane, Nodes written as kubelets would (no root).
.PHONY: demo-lite
demo-lite: testenv-cluster
	$(CARGO) build $(CARGO_LOCKED) --release -p overcast-ccm -p overcast-demo --bin overcast-ccm --bin demo-lite
	OVERCAST_CCM=$(CARGO_TARGET_DIR)/release/overcast-ccm $(CARGO_TARGET_DIR)/release/demo-lite

# A real cluster (NODES nodes, default 2) to point kubectl or overcast-ccm at, until Ctrl-C.
.PHONY: cluster
cluster: testenv
	$(CARGO) run --quiet -p overcast-testenv --example cluster

# A bare control plane to point kubectl or overcast-ccm at, until Ctrl-C.
.PHONY: control-plane
control-plane: testenv
	$(CARGO) run --quiet -p overcast-testenv --example control-plane
