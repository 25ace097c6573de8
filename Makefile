# imserious: build, test, run, install. GNU make (gmake on the BSDs).
GO ?= go
UNAME_S := $(shell uname -s)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)

# Where things go, after each system's conventions; any of them can be
# set on the command line (make install PREFIX=/usr DESTDIR=/tmp/pkg).
# SYSCONFDIR is also the default configuration the binaries are built
# with, so build and install must agree on it.
PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
ifeq ($(UNAME_S),OpenBSD)
SYSCONFDIR ?= /etc
MANDIR ?= $(PREFIX)/man
EXAMPLEDIR ?= $(PREFIX)/share/examples/imserious
RCDIR ?= /etc/rc.d
else ifeq ($(UNAME_S),FreeBSD)
SYSCONFDIR ?= $(PREFIX)/etc
MANDIR ?= $(PREFIX)/share/man
# The sample sits beside the configuration, as imserious.toml.sample.
EXAMPLEDIR ?= $(SYSCONFDIR)
RCDIR ?= $(PREFIX)/etc/rc.d
else
# Linux (and anything else with systemd).
SYSCONFDIR ?= /etc
MANDIR ?= $(PREFIX)/share/man
EXAMPLEDIR ?= $(PREFIX)/share/doc/imserious
ifeq ($(PREFIX),/usr)
UNITDIR ?= /lib/systemd/system
else
UNITDIR ?= $(PREFIX)/lib/systemd/system
endif
USERUNITDIR ?= $(PREFIX)/lib/systemd/user
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
endif

LDFLAGS = -s -w -X main.Version=$(VERSION) \
	-X github.com/imserious/imserious/config.DefaultPath=$(SYSCONFDIR)/imserious.toml
export CGO_ENABLED = 0

BINS = imserious imseriousctl
MAN5 = $(wildcard man/*.5)
MAN8 = $(wildcard man/*.8)
# The paths inside the service files.
SUBST = sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	-e 's|@EXAMPLEDIR@|$(EXAMPLEDIR)|g'

.PHONY: all build run test test-accounts lint lint-man check-service check-install \
	e2e bench bench-smoke install uninstall clean

all: build

# imseriousctl is built once its package exists.
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o imserious ./cmd/imserious
	if [ -d cmd/imseriousctl ]; then \
		$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o imseriousctl ./cmd/imseriousctl; fi

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

# The end-to-end suite against real Dovecots (root, Debian): installs
# Dovecot 2.3's packages when missing and a Debian 13 chroot with Dovecot
# 2.4 (debootstrap, reused once made), then runs ./e2e on the binaries
# just built, every case against both. -v prints the measured delivery times; no -race, which would slow
# the suite's own TLS client and so the times it prints.
e2e: build
	sh e2e/install-dovecot.sh
	sh e2e/install-dovecot24.sh
	IMSERIOUS_BIN=$(CURDIR)/imserious IMSERIOUSCTL_BIN=$(CURDIR)/imseriousctl \
		$(GO) test -tags e2e -count=1 -v -timeout 8m ./e2e/

# staticcheck, fetched through the Go module proxy at a fixed version (a
# tool, not a dependency of the daemon).
lint:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# The manual pages: mandoc's warnings and errors fail it.
lint-man:
	mandoc -Tlint -Wwarning $(MAN5) $(MAN8)

# The service files: the rc scripts parse, and systemd accepts the units
# and the sysusers.d file as installed, with the paths pointing at the
# binary just built (verify wants ExecStart= to exist). verify only warns
# about unknown keys and bad values, so any output fails too.
check-service: build
	sh -n etc/rc.d/openbsd/imserious
	sh -n etc/rc.d/freebsd/imserious
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir -p "$$tmp/user" "$$tmp/run" "$$tmp/root"; chmod 700 "$$tmp/run"; \
	for u in imserious.service user/imserious.service; do \
		sed -e 's|@SBINDIR@|$(CURDIR)|g' -e "s|@SYSCONFDIR@|$$tmp|g" \
			-e "s|@EXAMPLEDIR@|$(CURDIR)/etc|g" "etc/systemd/$$u" > "$$tmp/$$u"; \
		if grep -n '@[A-Z][A-Z_]*@' "$$tmp/$$u"; then echo "$$u: placeholder left" >&2; exit 1; fi; \
	done; \
	echo "systemd-analyze verify etc/systemd/imserious.service"; \
	out=$$(systemd-analyze verify --man=no "$$tmp/imserious.service" 2>&1) || { echo "$$out"; exit 1; }; \
	if [ -n "$$out" ]; then echo "$$out"; exit 1; fi; \
	echo "systemd-analyze --user verify etc/systemd/user/imserious.service"; \
	out=$$(XDG_RUNTIME_DIR="$$tmp/run" systemd-analyze --user verify --man=no "$$tmp/user/imserious.service" 2>&1) || { echo "$$out"; exit 1; }; \
	if [ -n "$$out" ]; then echo "$$out"; exit 1; fi; \
	echo "systemd-sysusers --dry-run etc/sysusers.d/imserious.conf"; \
	out=$$(systemd-sysusers --dry-run --root="$$tmp/root" - < etc/sysusers.d/imserious.conf 2>&1) || { echo "$$out"; exit 1; }; \
	echo "$$out" | grep -q "Creating user '_imserious'" || { echo "$$out"; exit 1; }

# install copies what `make build` made, as yourself, first: it never
# builds (root may have no Go in PATH). It never writes the configuration,
# only the sample beside it; uninstall removes exactly what install wrote.
install:
	@for f in $(BINS); do \
		[ -x $$f ] || [ $$f = imseriousctl -a ! -d cmd/imseriousctl ] || \
		{ echo "make install: no ./$$f: run 'make build' first (as yourself)" >&2; exit 1; }; \
	done
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(EXAMPLEDIR)
	install -m 0755 imserious $(DESTDIR)$(SBINDIR)/imserious
	if [ -d cmd/imseriousctl ]; then install -m 0755 imseriousctl $(DESTDIR)$(SBINDIR)/imseriousctl; fi
	install -m 0644 $(MAN5) $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 $(MAN8) $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 etc/imserious.toml.sample $(DESTDIR)$(EXAMPLEDIR)/imserious.toml.sample
ifeq ($(UNAME_S),OpenBSD)
	install -d $(DESTDIR)$(RCDIR)
	$(SUBST) etc/rc.d/openbsd/imserious > $(DESTDIR)$(RCDIR)/imserious
	chmod 0555 $(DESTDIR)$(RCDIR)/imserious
else ifeq ($(UNAME_S),FreeBSD)
	install -d $(DESTDIR)$(RCDIR)
	$(SUBST) etc/rc.d/freebsd/imserious > $(DESTDIR)$(RCDIR)/imserious
	chmod 0555 $(DESTDIR)$(RCDIR)/imserious
else
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(USERUNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	$(SUBST) etc/systemd/imserious.service > $(DESTDIR)$(UNITDIR)/imserious.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/imserious.service
	$(SUBST) etc/systemd/user/imserious.service > $(DESTDIR)$(USERUNITDIR)/imserious.service
	chmod 0644 $(DESTDIR)$(USERUNITDIR)/imserious.service
	install -m 0644 etc/sysusers.d/imserious.conf $(DESTDIR)$(SYSUSERSDIR)/imserious.conf
endif
	@[ -e $(DESTDIR)$(SYSCONFDIR)/imserious.toml ] || \
		echo "make install: no $(SYSCONFDIR)/imserious.toml yet: start from $(EXAMPLEDIR)/imserious.toml.sample"

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/imserious $(DESTDIR)$(SBINDIR)/imseriousctl
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man5/,$(notdir $(MAN5))) \
		$(addprefix $(DESTDIR)$(MANDIR)/man8/,$(notdir $(MAN8)))
	rm -f $(DESTDIR)$(EXAMPLEDIR)/imserious.toml.sample
	case "$(EXAMPLEDIR)" in */imserious) rmdir $(DESTDIR)$(EXAMPLEDIR) 2>/dev/null || true;; esac
ifeq ($(UNAME_S),OpenBSD)
	rm -f $(DESTDIR)$(RCDIR)/imserious
else ifeq ($(UNAME_S),FreeBSD)
	rm -f $(DESTDIR)$(RCDIR)/imserious
else
	rm -f $(DESTDIR)$(UNITDIR)/imserious.service $(DESTDIR)$(USERUNITDIR)/imserious.service \
		$(DESTDIR)$(SYSUSERSDIR)/imserious.conf
endif

# install then uninstall into a scratch DESTDIR: every placeholder is
# replaced, a configuration already there is left alone by both, and
# uninstall leaves no file behind.
check-install: build
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir -p "$$tmp$(SYSCONFDIR)"; echo '# mine' > "$$tmp$(SYSCONFDIR)/imserious.toml"; \
	$(MAKE) --no-print-directory install DESTDIR="$$tmp" >/dev/null; \
	echo "installed into DESTDIR:"; \
	(cd "$$tmp" && find . ! -type d ! -path '.$(SYSCONFDIR)/imserious.toml' | sort | sed 's|^\.|  |'); \
	for f in $(BINS) $(notdir $(MAN5) $(MAN8)) imserious.toml.sample; do \
		[ -n "$$(find "$$tmp" -name "$$f" ! -type d)" ] || \
		[ $$f = imseriousctl -a ! -d cmd/imseriousctl ] || { echo "install did not install $$f" >&2; exit 1; }; \
	done; \
	if grep -rlIn '@[A-Z][A-Z_]*@' "$$tmp"; then echo "placeholders left in the files above" >&2; exit 1; fi; \
	$(MAKE) --no-print-directory install DESTDIR="$$tmp" >/dev/null; \
	$(MAKE) --no-print-directory uninstall DESTDIR="$$tmp" >/dev/null; \
	[ "$$(cat "$$tmp$(SYSCONFDIR)/imserious.toml")" = '# mine' ] || \
		{ echo "install or uninstall touched $(SYSCONFDIR)/imserious.toml" >&2; exit 1; }; \
	rm "$$tmp$(SYSCONFDIR)/imserious.toml"; \
	left=$$(cd "$$tmp" && find . ! -type d); \
	if [ -n "$$left" ]; then echo "uninstall left: $$left" >&2; exit 1; fi; \
	echo "uninstall removed every file install wrote"

# The benchmarks: in-process micro-benchmarks, then the driver in bench/
# (the real daemon, privilege-separated as root, against a bare net/http
# server, alternating; see bench/doc.go). bench-smoke runs every part for
# about 10 s, only to check that it works (CI).
bench: build
	IMSERIOUS_BIN=$(CURDIR)/imserious $(GO) test -run '^$$' -bench . -benchmem ./...
	IMSERIOUS_BENCH=full IMSERIOUS_BIN=$(CURDIR)/imserious \
		$(GO) test -count=1 -v -timeout 30m -run '^TestBench$$' ./bench/

bench-smoke: build
	IMSERIOUS_BENCH=smoke IMSERIOUS_BIN=$(CURDIR)/imserious \
		$(GO) test -count=1 -v -timeout 5m -run '^TestBench$$' ./bench/

clean:
	rm -f imserious imseriousctl

# Accounts the root-only tests use (run as root; idempotent).
test-accounts:
	id _imserious >/dev/null 2>&1 || useradd -r -M -d /var/empty -s /usr/sbin/nologin _imserious
	id imse_alice >/dev/null 2>&1 || useradd -m -s /bin/sh imse_alice
	id imse_bob >/dev/null 2>&1 || useradd -m -s /bin/sh imse_bob
