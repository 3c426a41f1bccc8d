# nPanel build, test and development entry points. `make help` lists them.

SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN := bin/npanel
AGENT_BIN := bin/npanel-agent

# Debian packages the build and tests need; `make deps` installs the missing
# ones (as root). protoc regenerates the gRPC code for the generated-code check;
# chromium runs the GraphQL console's browser tests; the rest are the real
# daemons the integration tests and `make dev` run.
DEB_PACKAGES := protobuf-compiler curl dnsutils sqlite3 \
  nginx php-fpm php-cli \
  pdns-server pdns-backend-sqlite3 \
  mariadb-server mariadb-client \
  postgresql \
  exim4-daemon-heavy dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-sieve spamd spamassassin clamav-daemon roundcube-core roundcube-sqlite3 swaks \
  chromium pebble \
  restic rsync openssl openssh-server openssh-sftp-server openssh-client \
  mmdebstrap ansible ansible-lint rpm \
  prometheus

PROTO_FILES := $(shell find protos -name '*.proto')
PROTOC_GEN_GO := $(shell $(GO) env GOPATH)/bin/protoc-gen-go

.PHONY: help build dev deps generate generate-proto check-generated console-assets lint test test-servers test-short chaos bench loadtest fuzz package clean

help: ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build bin/npanel and bin/npanel-agent
	@echo "building $(BIN): the first build downloads the modules and compiles every package it names (a few minutes)"
	$(GO) build -v -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/npanel
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(AGENT_BIN) ./cmd/npanel-agent

dev: build ## run a local cluster: server with embedded etcd + 2 agents
	$(BIN) dev --data-dir .dev

deps: ## install missing Debian packages (needs root)
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root to install$$missing" >&2; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

generate: generate-proto ## regenerate protobuf and gqlgen code
	cd graph && $(GO) tool gqlgen generate --config gqlgen.yml

generate-proto: ## regenerate the protobuf code only
	$(GO) build -o bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	$(GO) build -o bin/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc
	protoc -I protos \
	  --plugin=protoc-gen-go=bin/protoc-gen-go --plugin=protoc-gen-go-grpc=bin/protoc-gen-go-grpc \
	  --go_out=. --go_opt=module=github.com/npanel/npanel \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/npanel/npanel \
	  $(PROTO_FILES)

# Compares the tree before and after generate, so it works on a fresh clone
# (CI) and on a tree with uncommitted work alike.
gen_state = { git status --porcelain -- protos graph; git diff -- protos graph; } | sha256sum
check-generated: ## fail if generated code differs from what make generate produces
	@before=$$($(gen_state)); \
	$(MAKE) --no-print-directory generate >/dev/null || exit 1; \
	after=$$($(gen_state)); \
	if [ "$$before" != "$$after" ]; then \
	  echo "generated code was out of date; make generate rewrote:"; git status --porcelain -- protos graph; exit 1; \
	fi

# Needs npm, curl and network access to the npm registry; the build does not:
# the assets are committed.
console-assets: ## re-vendor GraphiQL, React and ReactDOM into graph/console/assets
	graph/console/vendor-assets.sh

lint: ## gofmt, go vet, staticcheck (both modules)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	$(GO) build -o bin/staticcheck honnef.co/go/tools/cmd/staticcheck
	cd deploy && $(GO) vet ./... && ../bin/staticcheck ./...

# The chaos suite runs on its own, after the rest: its eleven processes
# would otherwise load the machine under the other integration tests.
test: deps lint check-generated test-servers ## everything: lint, generated code, all tests incl. integration
	$(GO) test -race -count=1 -timeout 30m $$($(GO) list ./... | grep -v '/chaos$$')
	$(GO) test -count=1 -timeout 20m ./chaos/
	cd deploy && $(GO) test -count=1 -timeout 30m ./...

# Builds (once, into GOCACHE) the servers tests start that Debian lacks —
# SeaweedFS for S3 — before the tests run, so its long first build does not
# compete with them.
test-servers:
	$(GO) test -count=1 -timeout 45m -run '^TestStart$$' ./internal/testenv/s3

test-short: ## unit tests only
	$(GO) test -short -count=1 ./...

# make test runs the chaos suite once per fault kind; this is the long run.
chaos: ## chaos suite, long run: real etcd, 3 replicas, 5 agents, 10 leader kills; failover and unavailability figures (root)
	NPANEL_CHAOS=full $(GO) test -count=1 -timeout 45m -run '^TestChaos$$' -v ./chaos/

bench: ## benchmarks with the figures the issues ask for
	$(GO) test -run '^$$' -bench . -cpu 1 -count 1 ./scheduler/
	$(GO) test -run '^$$' -bench . -count 1 ./pki/... ./validate/
	$(GO) test -run '^$$' -bench 'BenchmarkPingRoundTrip' -benchtime 1000x -count 1 ./controlplane/
	$(GO) test -run '^$$' -bench 'BenchmarkEnrol|BenchmarkServerColdStart' -benchtime 20x -count 1 ./controlplane/
	$(GO) test -run '^$$' -bench 'BenchmarkTenantSubscriptionLoad' -benchtime 500x -count 1 ./controlplane/
	$(GO) test -run '^$$' -bench 'BenchmarkIdleRSS' -benchtime 1x -count 1 ./cmd/npanel/
	$(GO) test -run '^$$' -bench . -count 1 ./nodeagent/actions/account/ ./nodeagent/services/
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 -timeout 30m ./nodeagent/actions/web/
	$(GO) test -run '^$$' -bench 'BenchmarkCreateDatabaseUserGrant' -benchtime 200x -count 1 ./nodeagent/actions/db/
	$(GO) test -run '^$$' -bench 'BenchmarkListDatabases1000' -count 1 -timeout 30m ./nodeagent/actions/db/
	$(GO) test -run '^$$' -bench . -count 1 ./dnszone/
	$(GO) test -run '^$$' -bench 'BenchmarkRecordChange$$' -count 1 ./nodeagent/actions/dns/
	$(GO) test -run '^$$' -bench 'BenchmarkRecordChangeSecondary' -benchtime 20x -count 1 ./nodeagent/actions/dns/
	$(GO) test -run '^$$' -bench 'BenchmarkAddRecordToAnswer' -benchtime 200x -count 1 ./controlplane/
	$(GO) test -run '^$$' -bench 'BenchmarkAddRecordToSecondary' -benchtime 500x -count 1 ./controlplane/
	NPANEL_BENCH_ZONES=10000 $(GO) test -run '^$$' -bench 'BenchmarkZones' -benchtime 1x -count 1 -timeout 60m ./controlplane/
	NPANEL_BENCH_ZONES=20000 $(GO) test -run '^$$' -bench 'BenchmarkSecondarySync' -benchtime 1x -count 1 -timeout 30m ./controlplane/
	$(GO) test -run '^$$' -bench . -benchtime 6x -count 1 ./nodeagent/actions/tls/
	$(GO) test -run '^$$' -bench 'BenchmarkRenewalSweep10k' -count 1 ./controlplane/
	$(GO) test -run '^$$' -bench 'BenchmarkCertRenewalWave' -benchtime 1x -count 1 -timeout 20m ./controlplane/
	$(GO) test -run '^$$' -bench 'BenchmarkCertificateThroughAPI' -benchtime 5x -count 1 -timeout 20m ./controlplane/
	$(GO) test -run '^$$' -bench 'BenchmarkBackupAccount' -benchtime 1x -count 1 -timeout 30m ./nodeagent/actions/backup/
	$(GO) test -run '^$$' -bench 'BenchmarkBackupWindow' -benchtime 1x -count 1 -timeout 60m ./nodeagent/actions/backup/
	$(GO) test -run '^$$' -bench 'BenchmarkBackupSchedulePass10k' -count 1 ./controlplane/
	$(GO) test -run '^$$' -bench 'BenchmarkEnsureMailbox|BenchmarkPasswdLineByHand' -benchtime 100x -count 1 ./nodeagent/actions/mail/
	$(GO) test -run '^$$' -bench 'BenchmarkIMAPLogin' -benchtime 50x -count 1 ./nodeagent/actions/mail/
	$(GO) test -run '^$$' -bench 'BenchmarkDelivery' -benchtime 2000x -count 1 -timeout 30m ./nodeagent/actions/mail/
	$(GO) test -run '^$$' -bench 'BenchmarkCreateMailboxToLogin' -benchtime 200x -count 1 -timeout 20m ./controlplane/
	$(GO) test -run '^$$' -bench 'BenchmarkMailboxesOnOneNode' -benchtime 10000x -count 1 -timeout 60m ./controlplane/

# Package version: 0.1.0~git<commits>.<sha> on an untagged tree (the commit
# count keeps it increasing), .dirty appended with uncommitted changes; valid
# for dpkg and rpm alike.
PKG_VERSION ?= 0.1.0~git$(shell git rev-list --count HEAD 2>/dev/null || echo 0).$(shell git rev-parse --short=7 HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD 2>/dev/null || echo .dirty)
PKG_BIN := bin/npanel-release
PKG_AGENT_BIN := bin/npanel-agent-release
package: ## build dist/npanel_PKG_VERSION_amd64.deb and dist/npanel-PKG_VERSION.x86_64.rpm
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w -X main.version=$(PKG_VERSION)' -o $(PKG_BIN) ./cmd/npanel
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w -X main.version=$(PKG_VERSION)' -o $(PKG_AGENT_BIN) ./cmd/npanel-agent
	cd deploy && SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) $(GO) run ./cmd/npanel-package \
	  --binary ../$(PKG_BIN) --agent-binary ../$(PKG_AGENT_BIN) --version '$(PKG_VERSION)' --out ../dist --packaging ../packaging

LOADTEST_FLAGS ?= --agents 1000 --accounts 100000 --rate 600
loadtest: ## load test: a server, simulated agents, accounts at a rate (LOADTEST_FLAGS)
	$(GO) run ./loadtest $(LOADTEST_FLAGS)

FUZZTIME ?= 20s
fuzz: ## run every fuzz target for FUZZTIME and keep new corpus entries
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; $(GO) test $$pkg -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) || exit 1; \
	  done; \
	done

clean: ## remove build outputs and the dev cluster's state (its accounts' Linux users too)
	@for u in $$(awk -F: -v p="$(CURDIR)/.dev/nodes/" 'index($$6, p) == 1 {print $$1}' /etc/passwd); do \
	  echo "userdel $$u"; userdel -f $$u; \
	done
	rm -rf bin .dev
