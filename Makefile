# imserious: build, test, run.
GO ?= go
PREFIX ?= /usr/local
SYSCONFDIR ?= $(PREFIX)/etc
MANDIR ?= $(PREFIX)/man
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS = -s -w -X main.Version=$(VERSION) \
	-X github.com/imserious/imserious/config.DefaultPath=$(SYSCONFDIR)/imserious.toml
export CGO_ENABLED = 0

.PHONY: all build run test test-accounts lint e2e bench install clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o imserious ./cmd/imserious

# Runs the daemon in the foreground on the sample configuration. The sample
# is for a non-root user; as root, run it as nobody (same processes, no uid
# changes) rather than require the accounts privilege separation needs.
run: build
	@if [ "$$(id -u)" = 0 ]; then \
		echo "make run: started as root, running the sample as nobody (see README: Running as root)"; \
		exec runuser -u nobody -- ./imserious -c etc/imserious.toml.sample; \
	else \
		exec ./imserious -c etc/imserious.toml.sample; \
	fi

# Static checks, cross-builds, then every test with the race detector
# (the race detector needs cgo; the daemon itself is built without).
test:
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory test-accounts; fi
	@test -z "$$(gofmt -l .)" || { echo 'not gofmt-clean:'; gofmt -l .; exit 1; }
	$(GO) vet ./...
	GOOS=openbsd $(GO) build -o /dev/null ./...
	GOOS=freebsd $(GO) build -o /dev/null ./...
	GOOS=openbsd $(GO) vet ./sandbox/ ./privsep/
	GOOS=freebsd $(GO) vet ./sandbox/ ./privsep/
	CGO_ENABLED=1 $(GO) test -race -count=1 ./...

# The end-to-end suite against a real Dovecot (root, Debian): installs
# Dovecot's packages when missing, then runs ./e2e on the binary just built.
# -v prints the measured delivery times; no -race, which would slow the
# suite's own TLS client and so the times it prints.
e2e: build
	sh e2e/install-dovecot.sh
	IMSERIOUS_BIN=$(CURDIR)/imserious $(GO) test -tags e2e -count=1 -v -timeout 8m ./e2e/

# staticcheck, fetched through the Go module proxy at a fixed version (a
# tool, not a dependency of the daemon).
lint:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

install: build
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(SYSCONFDIR)/examples \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0644 man/imserious.8 $(DESTDIR)$(MANDIR)/man8/imserious.8
	install -m 0644 man/imserious.toml.5 $(DESTDIR)$(MANDIR)/man5/imserious.toml.5
	install -m 0755 imserious $(DESTDIR)$(PREFIX)/sbin/imserious
	install -m 0644 etc/imserious.toml.sample $(DESTDIR)$(SYSCONFDIR)/examples/imserious.toml.sample

clean:
	rm -f imserious

# Accounts the root-only tests use (run as root; idempotent).
test-accounts:
	id _imserious >/dev/null 2>&1 || useradd -r -M -d /var/empty -s /usr/sbin/nologin _imserious
	id imse_alice >/dev/null 2>&1 || useradd -m -s /bin/sh imse_alice
	id imse_bob >/dev/null 2>&1 || useradd -m -s /bin/sh imse_bob
