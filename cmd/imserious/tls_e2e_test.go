//go:build linux

package main

// End-to-end tests of [tls]: the real binary serving HTTPS with a
// certificate from a test CA, the files replaced the ways certbot,
// Kubernetes, editors and operators replace them, and a client that trusts
// only the CA watching which certificate is served.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imserious/imserious/internal/daemontest"
	"github.com/imserious/imserious/tlsreload"
	"github.com/imserious/imserious/tlsreload/tlstest"
)

// tlsTOML is a configuration serving HTTPS on a free loopback port. The
// timeout is long so that a keep-alive connection opened before a swap is
// still open after it.
func tlsTOML(t *testing.T, cert, key, extra string) string {
	t.Helper()
	user, _ := account(t, "imse_alice")
	return fmt.Sprintf("listen = \"127.0.0.1:0\"\ntimeout = \"60s\"\n%s%s\n[tls]\ncert = %q\nkey = %q\n%s\n[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n",
		daemontest.LogTOML, daemontest.PrivsepTOML(t), cert, key, extra, user)
}

func serialOf(l *tlstest.Leaf) string { return tlsreload.SerialHex(l.Cert) }

// served returns the serial of the certificate a fresh handshake gets,
// verified against the CA alone.
func served(t *testing.T, d *daemontest.Daemon, ca *tlstest.CA) string {
	t.Helper()
	c, err := tls.Dial("tcp", d.Addr, &tls.Config{RootCAs: ca.Pool()})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", d.Addr, err)
	}
	defer c.Close()
	return tlsreload.SerialHex(c.ConnectionState().PeerCertificates[0])
}

// waitInstalled waits until the network process reports serving l; from
// then on every new handshake gets it.
func waitInstalled(t *testing.T, d *daemontest.Daemon, l *tlstest.Leaf) {
	t.Helper()
	d.WaitFrom(t, 0, "installation of certificate "+serialOf(l), func(m daemontest.Line) bool {
		return m["msg"] == "TLS certificate installed" && m["serial"] == serialOf(l)
	})
}

// keepAlive is one HTTPS connection reused for several requests.
type keepAlive struct {
	t    *testing.T
	c    *tls.Conn
	r    *bufio.Reader
	host string
	user string
	n    int
}

func newKeepAlive(t *testing.T, d *daemontest.Daemon, ca *tlstest.CA, user string) *keepAlive {
	t.Helper()
	c, err := tls.Dial("tcp", d.Addr, &tls.Config{RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{t: t, c: c, r: bufio.NewReader(c), host: d.Addr, user: user}
}

// put sends a notification on the connection and returns the status.
func (k *keepAlive) put() int {
	k.t.Helper()
	k.n++
	req, err := http.NewRequest("PUT", "https://"+k.host+"/notify", strings.NewReader(fmt.Sprintf(body1, k.user, k.n)))
	if err != nil {
		k.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if err := req.Write(k.c); err != nil {
		k.t.Fatalf("request %d on the kept-alive connection: %v", k.n, err)
	}
	resp, err := http.ReadResponse(k.r, req)
	if err != nil {
		k.t.Fatalf("response %d on the kept-alive connection: %v", k.n, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Close {
		k.t.Errorf("the server closes the kept-alive connection after request %d", k.n)
	}
	return resp.StatusCode
}

func (k *keepAlive) serial() string {
	return tlsreload.SerialHex(k.c.ConnectionState().PeerCertificates[0])
}

// waitReloaded waits for the parent's reload of l and checks why it came.
func waitReloaded(t *testing.T, d *daemontest.Daemon, l *tlstest.Leaf, reason string) {
	t.Helper()
	line := d.WaitFor("reload of "+serialOf(l), func(m daemontest.Line) bool {
		return m["msg"] == "TLS certificate reloaded" && m["serial"] == serialOf(l)
	})
	if line["reason"] != reason {
		t.Errorf("reloaded for %v, want %s", line["reason"], reason)
	}
}

// servesAfterReload waits for the reload of l, for the network process to
// install it, and checks that a new handshake gets it.
func servesAfterReload(t *testing.T, d *daemontest.Daemon, ca *tlstest.CA, l *tlstest.Leaf, reason string) {
	t.Helper()
	waitReloaded(t, d, l, reason)
	waitInstalled(t, d, l)
	if got := served(t, d, ca); got != serialOf(l) {
		t.Errorf("served %s, want %s", got, serialOf(l))
	}
}

func pids(kids map[string]daemontest.Proc) map[string]int {
	out := map[string]int{}
	for role, pi := range kids {
		out[role] = pi.Pid
	}
	return out
}

// tlsStyle is one way certificates get replaced on a real system.
type tlsStyle struct {
	name    string
	setup   func(t *testing.T, dir string, l *tlstest.Leaf) (cert, key string)
	replace func(t *testing.T, dir string, l *tlstest.Leaf)
}

func plainFiles(t *testing.T, dir string, l *tlstest.Leaf) (string, string) {
	c, k := filepath.Join(dir, "etc", "cert.pem"), filepath.Join(dir, "etc", "key.pem")
	l.Write(t, c, k)
	return c, k
}

var tlsStyles = []tlsStyle{
	{"overwrite in place", plainFiles, func(t *testing.T, dir string, l *tlstest.Leaf) {
		l.Write(t, filepath.Join(dir, "etc", "cert.pem"), filepath.Join(dir, "etc", "key.pem"))
	}},
	{"editor save by rename", plainFiles, func(t *testing.T, dir string, l *tlstest.Leaf) {
		for _, f := range []struct {
			name string
			data []byte
		}{{"cert.pem", l.CertPEM}, {"key.pem", l.KeyPEM}} {
			p := filepath.Join(dir, "etc", f.name)
			tlstest.WriteFile(t, p+".swp", f.data, 0o600)
			tlstest.Rename(t, p+".swp", p)
		}
	}},
	{"mv over from another directory", plainFiles, func(t *testing.T, dir string, l *tlstest.Leaf) {
		l.Write(t, filepath.Join(dir, "new", "cert.pem"), filepath.Join(dir, "new", "key.pem"))
		tlstest.Rename(t, filepath.Join(dir, "new", "cert.pem"), filepath.Join(dir, "etc", "cert.pem"))
		tlstest.Rename(t, filepath.Join(dir, "new", "key.pem"), filepath.Join(dir, "etc", "key.pem"))
	}},
	{"certbot live links repointed into archive",
		func(t *testing.T, dir string, l *tlstest.Leaf) (string, string) {
			arch, live := filepath.Join(dir, "archive", "example.org"), filepath.Join(dir, "live", "example.org")
			l.Write(t, filepath.Join(arch, "fullchain1.pem"), filepath.Join(arch, "privkey1.pem"))
			if err := os.MkdirAll(live, 0o755); err != nil {
				t.Fatal(err)
			}
			tlstest.Symlink(t, "../../archive/example.org/fullchain1.pem", filepath.Join(live, "fullchain.pem"))
			tlstest.Symlink(t, "../../archive/example.org/privkey1.pem", filepath.Join(live, "privkey.pem"))
			return filepath.Join(live, "fullchain.pem"), filepath.Join(live, "privkey.pem")
		},
		func(t *testing.T, dir string, l *tlstest.Leaf) {
			arch, live := filepath.Join(dir, "archive", "example.org"), filepath.Join(dir, "live", "example.org")
			l.Write(t, filepath.Join(arch, "fullchain2.pem"), filepath.Join(arch, "privkey2.pem"))
			for _, f := range []struct{ link, target string }{
				{"fullchain.pem", "fullchain2.pem"}, {"privkey.pem", "privkey2.pem"},
			} {
				tlstest.ReplaceLink(t, "../../archive/example.org/"+f.target, filepath.Join(live, f.link))
			}
		}},
	{"kubernetes ..data swap",
		func(t *testing.T, dir string, l *tlstest.Leaf) (string, string) {
			l.Write(t, filepath.Join(dir, "..2026_01", "tls.crt"), filepath.Join(dir, "..2026_01", "tls.key"))
			tlstest.Symlink(t, "..2026_01", filepath.Join(dir, "..data"))
			tlstest.Symlink(t, "..data/tls.crt", filepath.Join(dir, "tls.crt"))
			tlstest.Symlink(t, "..data/tls.key", filepath.Join(dir, "tls.key"))
			return filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
		},
		func(t *testing.T, dir string, l *tlstest.Leaf) {
			l.Write(t, filepath.Join(dir, "..2026_02", "tls.crt"), filepath.Join(dir, "..2026_02", "tls.key"))
			tlstest.Symlink(t, "..2026_02", filepath.Join(dir, "..data_tmp"))
			tlstest.Rename(t, filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data"))
			if err := os.RemoveAll(filepath.Join(dir, "..2026_01")); err != nil {
				t.Fatal(err)
			}
		}},
}

// TestTLSReload: for each way of replacing the files, the certificate
// served becomes the new one within seconds, by the watcher alone, with no
// process restarted, and a connection opened before the swap completes a
// request after it.
func TestTLSReload(t *testing.T) {
	ca := tlstest.NewCA(t)
	for _, s := range tlsStyles {
		t.Run(s.name, func(t *testing.T) {
			a, b := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
			dir := t.TempDir()
			cert, key := s.setup(t, dir, a)
			user, _ := account(t, "imse_alice")
			d := start(t, tlsTOML(t, cert, key, ""))
			before := pids(d.Children())
			if got := served(t, d, ca); got != serialOf(a) {
				t.Fatalf("served %s, want A %s", got, serialOf(a))
			}
			k := newKeepAlive(t, d, ca, user)
			if st := k.put(); st != 200 {
				t.Fatalf("status %d before the swap", st)
			}

			swapped := time.Now()
			s.replace(t, dir, b)
			waitInstalled(t, d, b)
			if took := time.Since(swapped); took > 10*time.Second {
				t.Errorf("new certificate served after %v", took)
			}
			if got := served(t, d, ca); got != serialOf(b) {
				t.Errorf("served %s after the swap, want B %s", got, serialOf(b))
			}
			waitReloaded(t, d, b, "file change")
			if st := k.put(); st != 200 {
				t.Errorf("status %d on the connection opened before the swap", st)
			}
			if k.serial() != serialOf(a) {
				t.Errorf("the connection opened before the swap changed certificate")
			}
			if after := pids(d.Children()); !maps.Equal(before, after) {
				t.Errorf("processes changed across the reload: %v, then %v", before, after)
			}
			if code := d.Stop(); code != 0 {
				t.Errorf("exit status %d, want 0", code)
			}
		})
	}
}

// TestTLSBadPairKeepsServing: a garbage key, then a key that does not
// match, are logged with the reason while A stays served; a good C after
// them is picked up.
func TestTLSBadPairKeepsServing(t *testing.T) {
	ca := tlstest.NewCA(t)
	a, b, c := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	dir := t.TempDir()
	cert, key := plainFiles(t, dir, a)
	d := start(t, tlsTOML(t, cert, key, ""))
	failed := func(why string) daemontest.Line {
		return d.WaitFor("reload failure saying "+why, func(m daemontest.Line) bool {
			e, _ := m["err"].(string)
			return m["msg"] == "TLS reload failed, still serving the previous certificate" && strings.Contains(e, why)
		})
	}

	tlstest.WriteFile(t, key, []byte("not a key\n"), 0o600)
	failed("key " + key + ": no PRIVATE KEY block")
	if got := served(t, d, ca); got != serialOf(a) {
		t.Errorf("garbage key: served %s, want A", got)
	}
	tlstest.WriteFile(t, key, b.KeyPEM, 0o600)
	failed("key " + key + ": does not match the certificate " + cert)
	if got := served(t, d, ca); got != serialOf(a) {
		t.Errorf("mismatched key: served %s, want A", got)
	}
	c.Write(t, cert, key)
	waitInstalled(t, d, c)
	if got := served(t, d, ca); got != serialOf(c) {
		t.Errorf("served %s, want C", got)
	}
	if n := d.Count(func(m daemontest.Line) bool { return m["msg"] == "TLS certificate installed" }); n != 2 {
		t.Errorf("%d certificates installed, want A and C only", n)
	}
}

// blindLayout puts the files two directories down: replacing the upper
// directory by a rename changes what the paths open without any event in
// the directory the watcher watches, so only periodic_reload or SIGHUP can
// notice.
func blindLayout(t *testing.T, dir string, l *tlstest.Leaf) (cert, key string) {
	cert, key = filepath.Join(dir, "live", "tls", "cert.pem"), filepath.Join(dir, "live", "tls", "key.pem")
	l.Write(t, cert, key)
	return cert, key
}

func blindReplace(t *testing.T, dir string, l *tlstest.Leaf) {
	l.Write(t, filepath.Join(dir, "next", "tls", "cert.pem"), filepath.Join(dir, "next", "tls", "key.pem"))
	tlstest.Rename(t, filepath.Join(dir, "live"), filepath.Join(dir, "old"))
	tlstest.Rename(t, filepath.Join(dir, "next"), filepath.Join(dir, "live"))
}

// TestTLSPeriodicReload: periodic_reload alone picks up a change the
// watcher was not told about.
func TestTLSPeriodicReload(t *testing.T) {
	ca := tlstest.NewCA(t)
	a, b := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	dir := t.TempDir()
	cert, key := blindLayout(t, dir, a)
	d := start(t, tlsTOML(t, cert, key, "periodic_reload = \"1s\""))
	blindReplace(t, dir, b)
	servesAfterReload(t, d, ca, b, "periodic")
}

// TestTLSSIGHUP: SIGHUP reloads the pair with the configuration. Both certificates expire within 14 days:
// that is warned about at start and again at the reload.
func TestTLSSIGHUP(t *testing.T) {
	ca := tlstest.NewCA(t)
	soon := tlstest.Options{NotAfter: time.Now().Add(5 * 24 * time.Hour)}
	a, b := ca.Issue(t, soon), ca.Issue(t, soon)
	dir := t.TempDir()
	cert, key := blindLayout(t, dir, a)
	d := start(t, tlsTOML(t, cert, key, ""))
	expiring := func(m daemontest.Line) bool {
		return m["msg"] == "TLS certificate expires soon" && m["level"] == "WARN"
	}
	if w := d.WaitFor("expiry warning", expiring); w["left"] != "4 days 23 hours" {
		t.Errorf("expiry warning at start says %v left", w["left"])
	}
	blindReplace(t, dir, b)
	if err := d.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	servesAfterReload(t, d, ca, b, "SIGHUP")
	d.WaitFor("SIGHUP line", func(m daemontest.Line) bool {
		return m["msg"] == "reloading the configuration" && m["reason"] == "SIGHUP"
	})
	if n := d.Count(expiring); n < 2 {
		t.Errorf("%d expiry warnings, want one at start and one at the reload", n)
	}
	if code := d.Stop(); code != 0 {
		t.Errorf("exit status %d after SIGHUP then SIGTERM, want 0", code)
	}
}

// TestTLSProtocols: HTTPS only, TLS 1.2 and up.
func TestTLSProtocols(t *testing.T) {
	ca := tlstest.NewCA(t)
	a := ca.Issue(t, tlstest.Options{})
	cert, key := plainFiles(t, t.TempDir(), a)
	user, _ := account(t, "imse_alice")
	d := start(t, tlsTOML(t, cert, key, ""))

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	req, _ := http.NewRequest("PUT", "https://"+d.Addr+"/notify", strings.NewReader(fmt.Sprintf(body1, user, 1)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Errorf("HTTPS: status %d, %+v", resp.StatusCode, resp.TLS)
	}

	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		c, err := tls.Dial("tcp", d.Addr, &tls.Config{RootCAs: ca.Pool(), MinVersion: v, MaxVersion: v})
		if err == nil {
			c.Close()
			t.Errorf("%s handshake succeeded", tls.VersionName(v))
		}
	}

	// Plain HTTP on the HTTPS port gets no notification through.
	req, _ = http.NewRequest("PUT", "http://"+d.Addr+"/notify", strings.NewReader(fmt.Sprintf(body1, user, 2)))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP request accepted")
		}
	}
}

// TestTLSKeyNeverInNetworkProcess: as root, the network process runs as a
// uid that cannot read the key, confined where the key's path does not
// exist, and holds no descriptor of either file.
func TestTLSKeyNeverInNetworkProcess(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: the network process only changes uid and root when the daemon starts as root")
	}
	ca := tlstest.NewCA(t)
	a := ca.Issue(t, tlstest.Options{})
	// World-searchable directories, so that only the key's own mode (0600,
	// root's) keeps other uids out.
	cert, key := plainFiles(t, daemontest.PublicDir(t), a)
	d := start(t, tlsTOML(t, cert, key, ""))
	netp, ok := d.Children()["net"]
	if !ok {
		t.Fatal("no net child")
	}
	uid, gid := netp.UID[1], netp.GID[1]
	if uid == 0 {
		t.Fatalf("network process runs as root")
	}

	cat := exec.Command("/bin/cat", key)
	cat.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cat.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("uid %d reading the key: %v, %q; want permission denied", uid, err, out)
	}
	if bytes.Contains(out, []byte("PRIVATE KEY")) {
		t.Errorf("uid %d read the key", uid)
	}

	root := fmt.Sprintf("/proc/%d/root", netp.Pid)
	if _, err := os.Stat(root + "/"); err != nil {
		t.Fatalf("cannot look into the network process's root: %v", err)
	}
	for _, p := range []string{key, cert, filepath.Dir(key)} {
		if _, err := os.Stat(root + p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s inside the network process's root: %v, want it not to exist", p, err)
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", netp.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", netp.Pid, fd.Name()))
		if target == key || target == cert {
			t.Errorf("network process holds fd %s on %s", fd.Name(), target)
		}
	}
	// And it serves the certificate all the same.
	if got := served(t, d, ca); got != serialOf(a) {
		t.Errorf("served %s, want A", got)
	}
}

// runToExit starts the daemon and returns its exit status and output once
// it exits on its own.
func runToExit(t *testing.T, cfgText string) (int, string) {
	t.Helper()
	cmd := daemontest.Command(t, "-c", daemontest.WriteConfig(t, cfgText))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("daemon still running after 30s:\n%s", out.String())
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// TestTLSStart: a pair that does not load stops the start; a non-loopback
// address needs [tls] or insecure_plaintext, and [auth] in clear on one is
// warned about.
func TestTLSStart(t *testing.T) {
	ca := tlstest.NewCA(t)
	a, b := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	dir := t.TempDir()
	cert, key := plainFiles(t, dir, a)
	tlstest.WriteFile(t, key, b.KeyPEM, 0o600)
	code, out := runToExit(t, tlsTOML(t, cert, key, ""))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 1 || !strings.Contains(out, "does not match the certificate "+cert) || !strings.Contains(lines[len(lines)-1], "not starting") {
		t.Errorf("mismatched pair at start: status %d\n%s", code, out)
	}

	user, _ := account(t, "imse_alice")
	code, out = runToExit(t, fmt.Sprintf("listen = \"0.0.0.0:0\"\n%s%s[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n", daemontest.LogTOML, daemontest.PrivsepTOML(t), user))
	if code != 1 || !strings.Contains(out, "is not a loopback address and there is no [tls]") {
		t.Errorf("non-loopback without [tls]: status %d\n%s", code, out)
	}

	d := start(t, fmt.Sprintf("listen = \"0.0.0.0:0\"\ninsecure_plaintext = true\n%s%s[auth]\nuser = \"dove\"\npass = \"secret\"\n[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n",
		daemontest.LogTOML, daemontest.PrivsepTOML(t), user))
	d.WaitFor("warning about [auth] without [tls]", func(m daemontest.Line) bool {
		s, _ := m["msg"].(string)
		return m["level"] == "WARN" && strings.HasPrefix(s, "[auth] without [tls] on a non-loopback address")
	})
}

// TestTLSCheckFlag: -n loads the pair, says what it serves and until
// when, warns about a certificate near its end, and reports a pair that
// does not match at the key's line.
func TestTLSCheckFlag(t *testing.T) {
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	check := func(cfg string) (int, string) {
		t.Helper()
		path := daemontest.WriteConfig(t, cfg)
		var stderr bytes.Buffer
		cmd := daemontest.Command(t, "-n", path)
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, stderr.String()
	}

	good := ca.Issue(t, tlstest.Options{})
	cert, key := filepath.Join(dir, "good.pem"), filepath.Join(dir, "good.key")
	good.Write(t, cert, key)
	code, out := check(tlsTOML(t, cert, key, ""))
	if code != 0 || !strings.Contains(out, "configuration OK") || !strings.Contains(out, "serial "+serialOf(good)) ||
		!strings.Contains(out, "expires "+good.Cert.NotAfter.UTC().Format(time.RFC3339)+" (in 89 days)") || strings.Contains(out, "warning") {
		t.Errorf("-n with a good pair: status %d\n%s", code, out)
	}

	soon := ca.Issue(t, tlstest.Options{NotAfter: time.Now().Add(3*24*time.Hour + time.Hour/2)})
	cert, key = filepath.Join(dir, "soon.pem"), filepath.Join(dir, "soon.key")
	soon.Write(t, cert, key)
	code, out = check(tlsTOML(t, cert, key, ""))
	if code != 0 || !strings.Contains(out, "warning: tls: certificate "+cert+" expires in 3 days") || !strings.Contains(out, "configuration OK") {
		t.Errorf("-n with a certificate expiring in 3 days: status %d\n%s", code, out)
	}

	other := ca.Issue(t, tlstest.Options{})
	tlstest.WriteFile(t, key, other.KeyPEM, 0o600)
	cfg := tlsTOML(t, cert, key, "")
	code, out = check(cfg)
	keyLine := 0
	for i, l := range strings.Split(cfg, "\n") {
		if strings.HasPrefix(l, "key = ") {
			keyLine = i + 1
		}
	}
	if code != 1 || !strings.Contains(out, fmt.Sprintf(":%d: tls.key: key %s: does not match the certificate %s", keyLine, key, cert)) {
		t.Errorf("-n with a mismatched key: status %d\n%s", code, out)
	}
}

// TestSecretsNotInNetworkProcessMemory: the network process holds the
// Basic credentials as digests only and the key only as crypto/tls parsed
// it: neither the password nor the key's PEM text is anywhere in its
// memory.
func TestSecretsNotInNetworkProcessMemory(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: reads another process's memory")
	}
	ca := tlstest.NewCA(t)
	a := ca.Issue(t, tlstest.Options{})
	cert, key := plainFiles(t, daemontest.PublicDir(t), a)
	pass := fmt.Sprintf("canary-%d-pass", time.Now().UnixNano())
	d := start(t, tlsTOML(t, cert, key, "")+fmt.Sprintf("[auth]\nuser = \"dove\"\npass = %q\n", pass))
	if got := served(t, d, ca); got != serialOf(a) {
		t.Fatalf("served %s, want A", got)
	}
	// A distinctive line of the key's PEM body.
	var keyLine string
	for line := range strings.Lines(string(a.KeyPEM)) {
		if line = strings.TrimSpace(line); len(line) == 64 {
			keyLine = line
			break
		}
	}
	if keyLine == "" {
		t.Fatal("no full line in the key's PEM")
	}
	mem := processMemory(t, d.Children()["net"].Pid)
	for what, secret := range map[string]string{"the password": pass, "the key's PEM": keyLine} {
		if bytes.Contains(mem, []byte(secret)) {
			t.Errorf("%s is in the network process's memory", what)
		}
	}
	// The scan can find what is there: the configured endpoint is.
	if !bytes.Contains(mem, []byte("/notify")) {
		t.Error("the memory scan found nothing it should")
	}
}

// processMemory reads every readable and writable mapping of pid.
func processMemory(t *testing.T, pid int) []byte {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var all []byte
	for line := range strings.Lines(string(maps)) {
		fields := strings.Fields(line)
		if len(fields) < 2 || !strings.HasPrefix(fields[1], "rw") {
			continue
		}
		var lo, hi uint64
		if _, err := fmt.Sscanf(fields[0], "%x-%x", &lo, &hi); err != nil || hi-lo > 1<<30 {
			continue
		}
		buf := make([]byte, hi-lo)
		n, _ := f.ReadAt(buf, int64(lo))
		all = append(all, buf[:n]...)
	}
	return all
}
