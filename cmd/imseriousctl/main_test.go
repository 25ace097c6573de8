package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"math/big"
	"net"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/tlsreload/tlstest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata from the output")

// testCtl is an invocation with fixed answers from the system: not root
// (commands resolve to the invoking user), a host name, no local Dovecot.
func testCtl(stdin string) (*ctl, *bytes.Buffer, *bytes.Buffer) {
	var stdout, stderr bytes.Buffer
	return &ctl{
		stdin:    strings.NewReader(stdin),
		stdout:   &stdout,
		stderr:   &stderr,
		hostname: func() (string, error) { return "mail.example.org", nil },
		dovecotVersion: func() (string, string, error) {
			return "", "", errors.New("no dovecot program in PATH, /usr/sbin or /usr/local/sbin")
		},
	}, &stdout, &stderr
}

// invoke runs imseriousctl with args and returns what it wrote and its
// exit status.
func invoke(c *ctl, args ...string) int {
	return c.run(args)
}

// golden compares got with testdata/name, or writes it there with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it after review):\n--- got\n%s\n--- want\n%s", p, got, want)
	}
}

// writeConfig copies testdata/src into a fresh directory, mode 0600 (a
// readable password would add a warning), and returns its path.
func writeConfig(t *testing.T, src string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", src))
	if err != nil {
		t.Fatal(err)
	}
	return writeConfigText(t, string(data))
}

func writeConfigText(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "imserious.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// selfSignedPEM makes a self-signed server certificate and its key.
func selfSignedPEM(t *testing.T, dns []string, ips []net.IP) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "imseriousctl test"},
		DNSNames:     dns,
		IPAddresses:  ips,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
}

// certs writes the certificate a TLS case needs beside its configuration.
var certs = map[string]func(t *testing.T, dir string){
	"tls-self-signed": func(t *testing.T, dir string) {
		c, k := selfSignedPEM(t, nil, []net.IP{net.ParseIP("127.0.0.1")})
		writePair(t, dir, c, k)
	},
	"tls-chain": func(t *testing.T, dir string) {
		ca := tlstest.NewCA(t)
		leaf := ca.Issue(t, tlstest.Options{IPs: []net.IP{net.ParseIP("127.0.0.1")}})
		writePair(t, dir, append(leaf.CertPEM, ca.PEM...), leaf.KeyPEM)
	},
	"tls-mismatch": func(t *testing.T, dir string) {
		leaf := tlstest.NewCA(t).Issue(t, tlstest.Options{DNSNames: []string{"push.example.org"}})
		writePair(t, dir, leaf.CertPEM, leaf.KeyPEM)
	},
	"tls-wildcard": func(t *testing.T, dir string) {
		c, k := selfSignedPEM(t, []string{"*.example.net", "push.example.org"}, nil)
		writePair(t, dir, c, k)
	},
}

func writePair(t *testing.T, dir string, certPEM, keyPEM []byte) {
	t.Helper()
	tlstest.WriteFile(t, filepath.Join(dir, "cert.pem"), certPEM, 0o644)
	tlstest.WriteFile(t, filepath.Join(dir, "key.pem"), keyPEM, 0o600)
}

// dovecotCases are the configurations of testdata/dovecot.
var dovecotCases = []string{
	"plain", "credentials", "endpoint", "ipv6", "wildcard",
	"tls-self-signed", "tls-chain", "tls-mismatch", "tls-wildcard",
	"handlers", "glob", "no-handlers",
}

// goldenDir is what the configuration's directory is shown as in golden
// files.
const goldenDir = "/etc/imserious"

// dovecotOutput runs dovecot VERSION on testdata/dovecot/NAME.toml and
// returns its output with the temporary directory shown as goldenDir.
func dovecotOutput(t *testing.T, name, version string) string {
	t.Helper()
	cfg := writeConfig(t, filepath.Join("dovecot", name+".toml"))
	dir := filepath.Dir(cfg)
	if mk := certs[name]; mk != nil {
		mk(t, dir)
	}
	c, stdout, stderr := testCtl("")
	if code := invoke(c, "-c", cfg, "dovecot", version); code != 0 {
		t.Fatalf("dovecot %s on %s: exit %d\n%s", version, name, code, stderr)
	}
	// Warnings of the configuration are the daemon's (imserious -n prints
	// them too); anything else would be an error.
	for _, l := range strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n") {
		if l != "" && !strings.HasPrefix(l, "warning: ") {
			t.Errorf("dovecot %s on %s: stderr %q, want warnings at most", version, name, stderr)
		}
	}
	return strings.ReplaceAll(stdout.String(), dir, goldenDir)
}

func TestDovecotGolden(t *testing.T) {
	for _, name := range dovecotCases {
		for _, v := range []string{"2.3", "2.4"} {
			t.Run(name+"/"+v, func(t *testing.T) {
				golden(t, filepath.Join("dovecot", name+"."+v+".golden"), dovecotOutput(t, name, v))
			})
		}
	}
}

// TestDovecotURL pins the URL of the credentials case byte for byte,
// apart from the golden files: percent-encoded once for 2.4, every %
// then doubled for 2.3, the only form each version sends as
// "a@b c/d%e" and "p:ss% w/@é" (checked against Dovecot 2.3.19.1 by the
// e2e suite and by hand against 2.4.1).
func TestDovecotURL(t *testing.T) {
	const url24 = "http://a%40b%20c%2Fd%25e:p%3Ass%25%20w%2F%40%C3%A9@127.0.0.1:12525/notify"
	url23 := strings.ReplaceAll(url24, "%", "%%")
	for v, want := range map[string]string{
		"2.3": "  push_notification_driver = ox:url=" + url23 + " max_retries=1 timeout_msecs=2000\n",
		"2.4": "  ox_url = " + url24 + "\n",
	} {
		if out := dovecotOutput(t, "credentials", v); !strings.Contains(out, want) {
			t.Errorf("dovecot %s: no line %q in\n%s", v, want, out)
		}
	}
}

// TestDovecotConfParses runs the installed doveconf on each 2.3 golden
// file: a syntax error Dovecot would refuse fails here before the e2e
// suite. Skipped where Dovecot 2.3 is not installed.
func TestDovecotConfParses(t *testing.T) {
	doveconf, err := execLookPath("doveconf")
	if err != nil {
		t.Skip("doveconf not installed: make e2e installs Dovecot")
	}
	out, err := runCmd(doveconf, "-c", "/dev/null", "-n")
	if err != nil || !strings.HasPrefix(out, "# 2.3.") {
		t.Skipf("doveconf is not Dovecot 2.3 (%v): %.40q", err, out)
	}
	for _, name := range dovecotCases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "dovecot.conf")
			if err := os.WriteFile(p, []byte(dovecotOutput(t, name, "2.3")), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := runCmd(doveconf, "-c", p, "-n"); err != nil {
				t.Errorf("doveconf refuses the output for %s: %v\n%s", name, err, out)
			}
		})
	}
}

func TestDovecotVersionDetected(t *testing.T) {
	cfg := writeConfig(t, "dovecot/plain.toml")
	for _, c := range []struct {
		version string
		err     error
		code    int
		want    string // in stdout, or stderr when code is not 0
	}{
		{"2.4.1-4 (7d8c0e5759)", nil, 0, "# 2.4 syntax: the version of /usr/sbin/dovecot (2.4.1-4 (7d8c0e5759)).\n"},
		{"2.3.19.1 (9b53102964)", nil, 0, "# 2.3 syntax: the version of /usr/sbin/dovecot (2.3.19.1 (9b53102964)).\n"},
		{"2.2.36 (1f10bfa63)", nil, 1, "imseriousctl: dovecot: /usr/sbin/dovecot is version 2.2.36 (1f10bfa63), and imseriousctl knows the settings of 2.3 and 2.4 only: give the version whose syntax it reads\n"},
		{"", errors.New("no dovecot program in PATH"), 1, "imseriousctl: dovecot: no version given and none found (no dovecot program in PATH): give it, imseriousctl dovecot 2.3 or 2.4\n"},
	} {
		ctl, stdout, stderr := testCtl("")
		ctl.dovecotVersion = func() (string, string, error) { return c.version, "/usr/sbin/dovecot", c.err }
		code := invoke(ctl, "-c", cfg, "dovecot")
		out := stdout.String()
		if c.code != 0 {
			out = stderr.String()
		}
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("dovecot with %q: exit %d, want %d; output\n%s\nwant it to hold\n%s", c.version, code, c.code, out, c.want)
		}
		if c.code == 0 && c.version[:3] == "2.4" && !strings.Contains(out, "ox_url = ") {
			t.Errorf("dovecot with %q printed no 2.4 settings:\n%s", c.version, out)
		}
	}
}

func TestSyntaxVersion(t *testing.T) {
	for in, want := range map[string]string{
		"2.3": "2.3", "2.4": "2.4", "2.3.19.1": "2.3", "2.4.1": "2.4", "2.4.1-4 (7d8c0e5759)": "2.4",
		"2.3.19.1 (9b53102964)\n": "2.3", "2.2": "", "3.0": "", "2": "", "2.x": "", "": "", "2.-4": "", "2.40": "",
	} {
		got, ok := syntaxVersion(in)
		if got != want || ok != (want != "") {
			t.Errorf("syntaxVersion(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

// TestDovecotResolveFailure: what the daemon's deeper check refuses (an
// account, a command) does not stop the settings from being printed, and
// the errors come as -n prints them.
func TestDovecotResolveFailure(t *testing.T) {
	cfg := writeConfigText(t, "[[handler]]\nuser = \"alice\"\ncommand = \"/nonexistent/program\"\n")
	c, stdout, stderr := testCtl("")
	if code := invoke(c, "-c", cfg, "dovecot", "2.3"); code != 0 {
		t.Fatalf("exit %d, want 0\n%s", code, stderr)
	}
	if !strings.Contains(stdout.String(), "-u alice ") {
		t.Errorf("no doveadm line for alice in\n%s", stdout)
	}
	conf, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rerr := conf.Resolve(false)
	if rerr == nil {
		t.Fatal("Resolve accepts a missing command")
	}
	want := rerr.Error() + "\nimseriousctl: imserious would not start with " + cfg + " (above), but the Dovecot settings printed do not depend on it\n"
	if stderr.String() != want {
		t.Errorf("stderr\n%s\nwant\n%s", stderr, want)
	}
}

// A link-local address with a zone makes a URL no Dovecot parses.
func TestDovecotZone(t *testing.T) {
	cfg := writeConfigText(t, "listen = \"[fe80::1%eth0]:12525\"\ninsecure_plaintext = true\n")
	c, stdout, stderr := testCtl("")
	if code := invoke(c, "-c", cfg, "dovecot", "2.3"); code != 1 || stdout.Len() > 0 || !strings.Contains(stderr.String(), "IPv6 zone") {
		t.Errorf("zone: exit %d, stdout %q, stderr %q; want 1, nothing, and why", code, stdout, stderr)
	}
}

func TestDovecotPortZero(t *testing.T) {
	cfg := writeConfigText(t, "listen = \"127.0.0.1:0\"\n")
	c, stdout, stderr := testCtl("")
	if code := invoke(c, "-c", cfg, "dovecot", "2.4"); code != 1 || stdout.Len() > 0 {
		t.Errorf("port 0: exit %d, stdout %q; want 1 and nothing", code, stdout)
	}
	if !strings.Contains(stderr.String(), "port 0") {
		t.Errorf("port 0: stderr %q does not say why", stderr)
	}
}

func TestUsage(t *testing.T) {
	cfg := writeConfig(t, "dovecot/plain.toml")
	for _, c := range []struct {
		args   []string
		code   int
		stdout string // exact, when not "*"
		stderr string // a part of it
	}{
		{[]string{"-h"}, 0, usageText, ""},
		{[]string{"-c", cfg, "check", "-h"}, 0, usageText, ""},
		{[]string{"-V"}, 0, "imseriousctl devel\n", ""},
		{nil, 2, "", "imseriousctl: no verb\n" + usageText},
		{[]string{"frobnicate"}, 2, "", `unknown verb "frobnicate"`},
		{[]string{"-x"}, 2, "", "flag provided but not defined: -x"},
		{[]string{"-c"}, 2, "", "flag needs an argument: -c"},
		{[]string{"-c", cfg, "dovecot", "2.5"}, 2, "", "dovecot 2.5: want 2.3 or 2.4"},
		{[]string{"-c", cfg, "dovecot", "2.3", "2.4"}, 2, "", "one version"},
		{[]string{"-c", cfg, "check"}, 2, "", "check takes one file"},
		{[]string{"-c", cfg, "check", "a", "b"}, 2, "", "check takes one file"},
		{[]string{"-c", cfg, "check", "-i", "example.org", "-"}, 2, "", "-i example.org: want IP or IP:port"},
		{[]string{"-c", cfg, "-s", "/nonexistent/imserious.sock", "status"}, 1, "", "control socket /nonexistent/imserious.sock"},
		{[]string{"-c", cfg, "-s", "/nonexistent/imserious.sock", "reload"}, 1, "", "is imserious running"},
		{[]string{"-c", cfg, "status", "x"}, 2, "", "status takes no arguments"},
		{[]string{"-c", cfg, "run"}, 2, "", "run takes a user"},
		{[]string{"-c", cfg, "run", "a", "b", "c"}, 2, "", "run takes a user"},
	} {
		ctl, stdout, stderr := testCtl("")
		code := invoke(ctl, c.args...)
		if code != c.code || stdout.String() != c.stdout || !strings.Contains(stderr.String(), c.stderr) {
			t.Errorf("imseriousctl %q: exit %d, stdout %q, stderr %q; want %d, %q, and stderr holding %q",
				c.args, code, stdout, stderr, c.code, c.stdout, c.stderr)
		}
		if c.code == 2 && !strings.HasSuffix(stderr.String(), usageText) {
			t.Errorf("imseriousctl %q: usage error without the usage: %q", c.args, stderr)
		}
	}
}

// TestConfigErrors: a configuration that does not load stops both verbs,
// with the errors exactly as imserious -n prints them.
func TestConfigErrors(t *testing.T) {
	bad := writeConfigText(t, "listen = \"127.0.0.1:12525\"\nlimitperod = 3\n[[handler]]\nuser = \"alice\"\n")
	missing := filepath.Join(t.TempDir(), "missing.toml")
	for _, file := range []string{bad, missing} {
		_, err := config.Load(file)
		if err == nil {
			t.Fatalf("%s loads", file)
		}
		for _, verb := range [][]string{{"dovecot", "2.3"}, {"check", "-"}} {
			c, stdout, stderr := testCtl("{}")
			code := invoke(c, append([]string{"-c", file}, verb...)...)
			if code != 1 || stdout.Len() > 0 || stderr.String() != err.Error()+"\n" {
				t.Errorf("%s on %s: exit %d, stdout %q, stderr\n%s\nwant 1, nothing, and\n%s", verb[0], file, code, stdout, stderr, err)
			}
		}
	}
}

// TestDefaultConfig: without -c, the daemon's default file is read.
func TestDefaultConfig(t *testing.T) {
	old := config.DefaultPath
	t.Cleanup(func() { config.DefaultPath = old })
	config.DefaultPath = writeConfig(t, "dovecot/endpoint.toml")
	c, stdout, stderr := testCtl("")
	if code := invoke(c, "dovecot", "2.4"); code != 0 || !strings.Contains(stdout.String(), "/hooks/dovecot") {
		t.Errorf("exit %d, stdout\n%s\nstderr %s", code, stdout, stderr)
	}
}

var execLookPath = osexec.LookPath

// runCmd runs a program and returns its combined output.
func runCmd(name string, args ...string) (string, error) {
	out, err := osexec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// TestDovecotCertUnreadable: a certificate that cannot be read (not
// there yet, or not readable by this user) still gives the settings,
// naming the file and saying it was not checked.
func TestDovecotCertUnreadable(t *testing.T) {
	cfg := writeConfigText(t, "[tls]\ncert = \"missing.pem\"\nkey = \"missing.key\"\n[[handler]]\nuser = \"alice\"\ncommand = \"true\"\n")
	c, stdout, stderr := testCtl("")
	if code := invoke(c, "-c", cfg, "dovecot", "2.3"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	cert := filepath.Join(filepath.Dir(cfg), "missing.pem")
	for _, want := range []string{
		"\nssl_client_ca_file = " + cert + "\n",
		"# Not checked: open " + cert + ": no such file or directory.\n",
		"ox:url=https://127.0.0.1:12525/notify ",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("no %q in\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr.String(), "tls.cert") {
		t.Errorf("the daemon's error about the certificate is not on stderr: %q", stderr)
	}
}
