//go:build e2e && linux

package e2e

import (
	"fmt"
	"net"
	"os"
	"testing"

	"github.com/imserious/imserious/internal/daemontest"
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	cleanup, err := setCtl()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer cleanup()
	return daemontest.Main(m)
}

// requireRoot skips when not root: the suite starts Dovecot, creates
// accounts and tests the privilege drop, all of which need root. CI runs
// it as root, so there it always runs.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the Dovecot end-to-end suite needs root (it starts Dovecot, creates accounts, drops privileges): run `make e2e` as root")
	}
}

// Where Debian's packages put Dovecot, in Debian 12 and 13 alike (the
// 2.4 ones inside its chroot).
const (
	dovecotBin = "/usr/sbin/dovecot"
	doveadmBin = "/usr/bin/doveadm"
	ldaBin     = "/usr/lib/dovecot/dovecot-lda"
)

// requireDovecot fails, rather than skips, when the host's Dovecot is
// missing: `make e2e` installs it, and a suite that silently tests
// nothing would hide a broken install step.
func requireDovecot(t *testing.T) {
	t.Helper()
	for _, p := range []string{dovecotBin, doveadmBin, ldaBin} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("dovecot is not installed (%v): run `make e2e`, which installs dovecot-core, dovecot-imapd and dovecot-lmtpd", err)
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago, for
// Dovecot's LMTP listener (Dovecot cannot be asked to pick one and say).
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
