package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imserious/imserious/privsep"
)

// fdm writes a stand-in for /usr/bin/fdm (not installed everywhere) and
// returns its absolute path: Resolve stats it as it would the real one.
func fdm(tb testing.TB) string {
	tb.Helper()
	p := filepath.Join(safeDir(tb), "fdm")
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(p, 0o755); err != nil { // umask-proof
		tb.Fatal(err)
	}
	return p
}

// scaleConfig is n handlers for users u00001... over the accounts named in
// runAs (round robin), each fetching with fdm, as a site with one fetcher
// per mailbox writes it.
func scaleConfig(fdmPath, chroot string, n int, runAs []string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "[privsep]\nuser = \"nobody\"\nchroot = %q\n", chroot)
	for i := range n {
		fmt.Fprintf(&b, "\n[[handler]]\nuser = \"u%05d\"\nrun_as = %q\ncommand = \"%s -a acct fetch\"\ndelay = \"2s\"\n",
			i+1, runAs[i%len(runAs)], fdmPath)
	}
	return []byte(b.String())
}

// scaleAccount is the one account the 10,000 handlers run as: as root an
// unprivileged system account, otherwise the invoking user (the only one
// allowed then).
func scaleAccount(tb testing.TB) (name string, root bool) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return "daemon", true
	}
	cur, err := privsep.Current()
	if err != nil {
		tb.Fatal(err)
	}
	return cur.Name, false
}

func BenchmarkLoadResolve10000(b *testing.B) {
	acct, root := scaleAccount(b)
	dir := b.TempDir()
	file := filepath.Join(dir, "imserious.toml")
	if err := os.WriteFile(file, scaleConfig(fdm(b), filepath.Join(safeDir(b), "missing"), 10000, []string{acct}), 0o600); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c, err := Load(file)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Resolve(root); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLoadResolve10000: the file of BenchmarkLoadResolve10000, 1.3 MiB,
// loads and resolves, each handler in its place with the one account and
// the program.
func TestLoadResolve10000(t *testing.T) {
	acct, root := scaleAccount(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "imserious.toml")
	prog := fdm(t)
	if err := os.WriteFile(file, scaleConfig(prog, filepath.Join(safeDir(t), "missing"), 10000, []string{acct}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file)
	if err != nil {
		t.Fatalf("Load:\n%.2000v", err)
	}
	if err := c.Resolve(root); err != nil {
		t.Fatalf("Resolve(%v):\n%.2000v", root, err)
	}
	if len(c.Handlers) != 10000 {
		t.Fatalf("%d handlers, want 10000", len(c.Handlers))
	}
	for i, h := range c.Handlers {
		if h.User != fmt.Sprintf("u%05d", i+1) || h.Account.Name != acct || h.Path != prog ||
			len(h.Command) != 4 || h.Line != 5+6*i {
			t.Fatalf("handler[%d] = %+v", i+1, h)
		}
	}
	if a := c.Accounts(); len(a) != 1 || a[0].Name != acct {
		t.Errorf("Accounts() = %+v, want only %q", a, acct)
	}
}

// BenchmarkLoadResolve1000Over100 is the other shape of a large site: 1,000
// handlers spread over 100 accounts. It creates the accounts (about 3 s of
// useradd and userdel, outside the timing), so it needs root.
func BenchmarkLoadResolve1000Over100(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates 100 system accounts with useradd")
	}
	var names []string
	for i := range 100 {
		name := fmt.Sprintf("imse_t_s%03d", i)
		useradd(b, name)
		names = append(names, name)
	}
	dir := b.TempDir()
	file := filepath.Join(dir, "imserious.toml")
	if err := os.WriteFile(file, scaleConfig(fdm(b), filepath.Join(safeDir(b), "missing"), 1000, names), 0o600); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c, err := Load(file)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Resolve(true); err != nil {
			b.Fatal(err)
		}
		if n := len(c.Accounts()); n != 100 {
			b.Fatalf("%d accounts, want 100", n)
		}
	}
}
