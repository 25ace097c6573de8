package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/imserious/imserious/config"
)

// The settings printed are those dovecot-ox.md records as observed to
// work on Dovecot 2.3.19.1 and 2.4.1; nothing here is guessed from the
// documentation alone.

// metadataKey is the per-user METADATA entry without which the OX driver
// sends nothing for a user; its value must contain "user=".
const metadataKey = "/private/vendor/vendor.dovecot/http-notify"

// The limits on how long a delivery waits for imserious: Dovecot's LDA
// and LMTP wait for the PUT to end, and 2.4.1's defaults (one attempt,
// one minute) would hold a delivery for a minute behind a slow receiver.
// Two attempts of 2 s each in both versions (2.3: max_retries=1 is two
// attempts); imserious answers in milliseconds.
const (
	attemptTimeout = 2 * time.Second
	attempts       = 2
)

// systemCABundle is where Debian and its derivatives keep the public CAs
// in one file, for a certificate the file of [tls] cert does not anchor.
const systemCABundle = "/etc/ssl/certs/ca-certificates.crt"

func (c *ctl) dovecot(file string, args []string) error {
	fs := newFlags("dovecot")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usagef("dovecot takes one version, 2.3 or 2.4")
	}
	var version, detected string
	if fs.NArg() == 1 {
		v, ok := syntaxVersion(fs.Arg(0))
		if !ok {
			return usagef("dovecot %s: want 2.3 or 2.4", fs.Arg(0))
		}
		version = v
	} else {
		full, bin, err := c.dovecotVersion()
		if err != nil {
			return &failure{fmt.Sprintf("imseriousctl: dovecot: no version given and none found (%v): give it, imseriousctl dovecot 2.3 or 2.4", err)}
		}
		v, ok := syntaxVersion(full)
		if !ok {
			return &failure{fmt.Sprintf("imseriousctl: dovecot: %s is version %s, and imseriousctl knows the settings of 2.3 and 2.4 only: give the version whose syntax it reads", bin, full)}
		}
		version, detected = v, fmt.Sprintf("%s (%s)", bin, full)
	}

	cfg, resolveErr, err := c.load(file)
	if err != nil {
		return err
	}
	t, err := c.target(cfg)
	if err != nil {
		return &failure{"imseriousctl: " + err.Error()}
	}
	var out bytes.Buffer
	if version == "2.3" {
		write23(&out, cfg, t, detected)
	} else {
		write24(&out, cfg, t, detected)
	}
	if _, err := c.stdout.Write(out.Bytes()); err != nil {
		return err
	}
	// What Resolve checks (accounts, commands, the key) never changes
	// what Dovecot needs: print it, and say what else is wrong.
	if resolveErr != nil {
		fmt.Fprintln(c.stderr, resolveErr)
		fmt.Fprintf(c.stderr, "imseriousctl: imserious would not start with %s (above), but the Dovecot settings printed do not depend on it\n", file)
	}
	c.warn(cfg)
	return nil
}

// syntaxVersion maps a version (2.3, 2.4.1, or dovecot --version's
// "2.3.19.1 (9b53102964)") to the syntax it reads.
func syntaxVersion(v string) (string, bool) {
	v, _, _ = strings.Cut(strings.TrimSpace(v), " ")
	parts := strings.Split(v, ".")
	if len(parts) < 2 || parts[0] != "2" {
		return "", false
	}
	// Only major and minor decide; the rest may be "1-4" (Debian's 2.4.1).
	if _, err := strconv.ParseUint(parts[1], 10, 16); err != nil {
		return "", false
	}
	switch parts[1] {
	case "3", "4":
		return "2." + parts[1], true
	}
	return "", false
}

// localDovecotVersion runs this machine's dovecot --version, looked for in
// PATH and then where packages put it (sbin is often not in a user's PATH).
func localDovecotVersion() (version, binary string, err error) {
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		for _, p := range []string{"/usr/sbin/dovecot", "/usr/local/sbin/dovecot"} {
			if fi, e := os.Stat(p); e == nil && fi.Mode().IsRegular() {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return "", "", fmt.Errorf("no dovecot program in PATH, /usr/sbin or /usr/local/sbin")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "", "", fmt.Errorf("%s --version: %v", bin, err)
	}
	return strings.TrimSpace(string(out)), bin, nil
}

// target is where Dovecot sends the notifications.
type target struct {
	scheme   string
	host     string // as in a URL: brackets around IPv6, zone escaped
	port     uint16
	path     string // escaped
	userinfo string // "user:pass", percent-encoded; "" without [auth]
	notes    []string
	ca       *caFile // nil without [tls]
}

// caFile is what ssl_client_ca_file should name, and why.
type caFile struct {
	file  string
	notes []string
}

// url is the notification URL, percent-encoded once: what 2.4 takes and
// what 2.3 takes once every % is doubled.
func (t *target) url() string {
	var b strings.Builder
	b.WriteString(t.scheme + "://")
	if t.userinfo != "" {
		b.WriteString(t.userinfo + "@")
	}
	b.WriteString(t.host + ":" + strconv.Itoa(int(t.port)) + t.path)
	return b.String()
}

func (c *ctl) target(cfg *config.Config) (*target, error) {
	listen := cfg.Listen
	if listen == "" {
		listen = config.DefaultListen
	}
	ap, err := netip.ParseAddrPort(listen)
	if err != nil {
		return nil, fmt.Errorf("listen %q: %v", listen, err)
	}
	if ap.Port() == 0 {
		return nil, fmt.Errorf("%s: listen %s: with port 0 imserious takes a free port at each start, which Dovecot cannot know; set a fixed port", cfg.File, listen)
	}
	if ap.Addr().Zone() != "" {
		// Seen on real Dovecots: 2.4.1 refuses the URL and does not start
		// ("Invalid IPv6 host address"), 2.3.19 logs "Failed to parse OX
		// REST URL" on every delivery and sends nothing.
		return nil, fmt.Errorf("%s: listen %s: Dovecot cannot parse a URL with an IPv6 zone; listen on a global or loopback address", cfg.File, listen)
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = config.DefaultEndpoint
	}
	t := &target{scheme: "http", port: ap.Port(), path: (&url.URL{Path: endpoint}).EscapedPath()}
	if cfg.Auth != nil {
		t.userinfo = escapeUserinfo(cfg.Auth.User) + ":" + escapeUserinfo(cfg.Auth.Pass)
	}

	var chain []*x509.Certificate
	if cfg.TLS != nil {
		t.scheme = "https"
		var err error
		chain, err = readChain(cfg.TLS)
		if err != nil {
			t.ca = &caFile{file: cfg.TLS.Cert, notes: []string{
				fmt.Sprintf("Not checked: %v.", err),
				"Name the file of the CA that issued the certificate; if it is self-signed, that is the certificate itself.",
			}}
		}
	}

	addr := ap.Addr()
	if addr.IsUnspecified() {
		host, why := c.wildcardHost(chain)
		t.host = urlHost(host)
		t.notes = append(t.notes, fmt.Sprintf("imserious listens on every address (%s): %s is %s;", listen, host, why),
			"use a name or address of this machine that Dovecot reaches (and allow admits Dovecot's).")
	} else {
		t.host = urlHost(addr.String())
	}
	if len(chain) > 0 {
		t.ca = caFor(cfg.TLS.Cert, chain)
		host := strings.Trim(t.host, "[]")
		if a, err := netip.ParseAddr(host); err == nil {
			host = a.WithZone("").String()
		}
		if !certNames(chain[0], host) {
			t.notes = append(t.notes,
				fmt.Sprintf("WARNING: the certificate does not name %s (it names %s): Dovecot checks", host, names(chain[0])),
				"the URL's host against it and will refuse it. Use a URL host the certificate names,",
				"or a certificate that names this one.")
		}
	}
	return t, nil
}

// wildcardHost picks the URL host for a listen address that is every
// address: a name the certificate holds (Dovecot checks the URL's host
// against it), this machine's name when the certificate holds it or when
// there is no certificate.
func (c *ctl) wildcardHost(chain []*x509.Certificate) (host, why string) {
	name, err := c.hostname()
	if err != nil || name == "" {
		name = "localhost"
	}
	if len(chain) == 0 {
		if err != nil {
			return name, fmt.Sprintf("a guess (the host name is unknown: %v)", err)
		}
		return name, "this machine's host name"
	}
	leaf := chain[0]
	if certNames(leaf, name) {
		return name, "this machine's host name, which the certificate names"
	}
	for _, n := range leaf.DNSNames {
		if !strings.HasPrefix(n, "*.") {
			return n, "the first name in the certificate"
		}
	}
	if len(leaf.IPAddresses) > 0 {
		return leaf.IPAddresses[0].String(), "the first address in the certificate"
	}
	return name, "this machine's host name, which the certificate does not name"
}

// urlHost writes an address or name as a URL host: IPv6 in brackets, a
// zone percent-encoded (RFC 6874).
func urlHost(h string) string {
	a, err := netip.ParseAddr(h)
	if err != nil || !a.Is6() {
		return h
	}
	s := a.WithZone("").String()
	if z := a.Zone(); z != "" {
		s += "%25" + url.PathEscape(z)
	}
	return "[" + s + "]"
}

// escapeUserinfo percent-encodes everything but RFC 3986's unreserved
// characters. More than the RFC requires, but never wrong, and the bytes
// Dovecot 2.3 gives a meaning to in the driver's option string (space,
// %) are among the encoded ones.
func escapeUserinfo(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if 'A' <= ch && ch <= 'Z' || 'a' <= ch && ch <= 'z' || '0' <= ch && ch <= '9' ||
			ch == '-' || ch == '.' || ch == '_' || ch == '~' {
			b.WriteByte(ch)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[ch>>4])
		b.WriteByte(hex[ch&15])
	}
	return b.String()
}

// readChain returns the certificates of the [tls] cert file: the chain
// Resolve loaded, or, when it could not (not root, a key it cannot read),
// the file read here.
func readChain(t *config.TLS) ([]*x509.Certificate, error) {
	data := []byte(nil)
	if t.Pair != nil {
		data = t.Pair.CertPEM
	} else {
		f, err := os.Open(t.Cert)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		data, err = io.ReadAll(io.LimitReader(f, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("%s: %v", t.Cert, err)
		}
	}
	var chain []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", t.Cert, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%s: no certificate", t.Cert)
	}
	return chain, nil
}

func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// caFor says what Dovecot must trust: the cert file itself when the chain
// in it ends in a self-signed certificate (the leaf, or a root included
// after the intermediates), otherwise the CA that issued its last
// certificate, which imserious does not have.
func caFor(certFile string, chain []*x509.Certificate) *caFile {
	last := chain[len(chain)-1]
	switch {
	case len(chain) == 1 && selfSigned(last):
		return &caFile{file: certFile, notes: []string{
			"The certificate is self-signed: Dovecot trusts it through its own file.",
		}}
	case selfSigned(last):
		return &caFile{file: certFile, notes: []string{
			fmt.Sprintf("The chain in %s ends with its root CA (%s): Dovecot trusts it through that file.", path.Base(certFile), subject(last)),
		}}
	}
	return &caFile{file: systemCABundle, notes: []string{
		fmt.Sprintf("The certificate is issued by %s, which %s does not hold:", issuer(last), path.Base(certFile)),
		fmt.Sprintf("name that CA's certificate (PEM) here; %s holds the public CAs.", systemCABundle),
	}}
}

func subject(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return strconv.Quote(c.Subject.CommonName)
	}
	return c.Subject.String()
}

func issuer(c *x509.Certificate) string {
	if c.Issuer.CommonName != "" {
		return strconv.Quote(c.Issuer.CommonName)
	}
	return c.Issuer.String()
}

// certNames reports whether Dovecot accepts the certificate for host: a
// name or address in it, or, in one without either, its common name
// (which Dovecot still honours, Go no longer).
func certNames(c *x509.Certificate, host string) bool {
	if c.VerifyHostname(host) == nil {
		return true
	}
	return len(c.DNSNames) == 0 && len(c.IPAddresses) == 0 && strings.EqualFold(c.Subject.CommonName, host)
}

func names(c *x509.Certificate) string {
	var out []string
	out = append(out, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	if len(out) == 0 {
		if c.Subject.CommonName == "" {
			return "nothing"
		}
		return "only the common name " + strconv.Quote(c.Subject.CommonName)
	}
	return strings.Join(out, ", ")
}

// notifyUsers returns the doveadm selection for each distinct handler user
// in file order: "-u USER", or "-A" (every user) once for a wildcard
// handler, which makes the others redundant. A glob of * and ? alone is
// a doveadm user mask too, but -A is simpler and what a wildcard handler
// wants served is every user it matches; so every glob gives -A.
func notifyUsers(cfg *config.Config) (users []string, all bool) {
	seen := map[string]bool{}
	for _, h := range cfg.Handlers {
		if isGlob(h.User) {
			all = true
			continue
		}
		if !seen[h.User] {
			seen[h.User] = true
			users = append(users, h.User)
		}
	}
	return users, all
}

// isGlob reports whether a handler user is a pattern (spec §2: path.Match
// rules) rather than a name.
func isGlob(user string) bool {
	return strings.ContainsAny(user, `*?[\`)
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// doveadmLines are the commands that switch notifications on, one per
// user, as comments.
func doveadmLines(w io.Writer, cfg *config.Config) {
	users, all := notifyUsers(cfg)
	fmt.Fprintln(w)
	if len(users) == 0 && !all {
		fmt.Fprintln(w, "# No [[handler]] in the configuration: no user to switch notifications on for.")
		fmt.Fprintln(w, "# For each user imserious should hear of, run as root:")
		fmt.Fprintf(w, "#   doveadm mailbox metadata set -u USER -s \"\" %s user=USER\n", metadataKey)
		metadataNote(w)
		return
	}
	fmt.Fprintln(w, "# Dovecot sends nothing for a user until this METADATA key is set for them. Run as root:")
	if all {
		// The value must hold "user="; the name in it is used only with
		// user_from_metadata, which is not set: the empty one works in
		// 2.3.19.1 and 2.4.1 alike, and would make such a set-up send an
		// empty user, which imserious refuses, rather than one made up.
		fmt.Fprintln(w, "# (a wildcard handler: every user)")
		fmt.Fprintf(w, "#   doveadm mailbox metadata set -A -s \"\" %s user=\n", metadataKey)
	} else {
		for _, u := range users {
			fmt.Fprintf(w, "#   doveadm mailbox metadata set -u %s -s \"\" %s %s\n", shellQuote(u), metadataKey, shellQuote("user="+u))
		}
	}
	metadataNote(w)
}

func metadataNote(w io.Writer) {
	fmt.Fprintln(w, "# Dovecot may keep what it read of the key for up to 60 s: a change can take a minute.")
	fmt.Fprintf(w, "# To stop notifications for a user: doveadm mailbox metadata unset -u USER -s \"\" %s\n", metadataKey)
}

func header(w io.Writer, cfg *config.Config, version, detected string) {
	fmt.Fprintf(w, "# Dovecot %s settings for the imserious of %s,\n", version, cfg.File)
	fmt.Fprintf(w, "# printed by imseriousctl dovecot %s.\n", version)
	if detected != "" {
		fmt.Fprintf(w, "# %s syntax: the version of %s.\n", version, detected)
	}
}

func comments(w io.Writer, indent string, lines []string) {
	for _, l := range lines {
		fmt.Fprintf(w, "%s# %s\n", indent, l)
	}
}

// write23 prints the Dovecot 2.3 settings.
func write23(w io.Writer, cfg *config.Config, t *target, detected string) {
	header(w, cfg, "2.3", detected)
	fmt.Fprint(w, `#
# The OX push driver notifies for mail that dovecot-lda and LMTP deliver
# into INBOX. IMAP (APPEND, COPY, MOVE) never notifies: it needs no plugin.
protocol lda {
  mail_plugins = $mail_plugins notify push_notification
}
protocol lmtp {
  mail_plugins = $mail_plugins notify push_notification
}

# Required: the driver reads a per-user METADATA key, and without this
# every delivery logs "Mailbox attributes not enabled". Keep yours if
# mail_attribute_dict is set already: any dict works.
mail_attribute_dict = file:%h/dovecot-attributes
# Optional: lets users switch notifications on and off themselves with
# IMAP SETMETADATA (and shows METADATA to every IMAP client).
#protocol imap {
#  imap_metadata = yes
#}
`)
	if t.ca != nil {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "# Dovecot checks imserious's certificate and the URL's host against it.")
		comments(w, "", t.ca.notes)
		fmt.Fprintln(w, "# Every SSL client of Dovecot trusts this file; dovecot-lda and LMTP read it")
		fmt.Fprintln(w, "# as the mail user, so it must be readable by the mail users' uids.")
		fmt.Fprintf(w, "ssl_client_ca_file = %s\n", t.ca.file)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "plugin {")
	comments(w, "  ", t.notes)
	switch {
	case t.userinfo != "":
		io.WriteString(w, "  # [auth] user and pass percent-encoded, then every % written %%, as Dovecot\n"+
			"  # expands %-variables in plugin settings (a single % fails every delivery).\n")
	case strings.Contains(t.url(), "%"):
		io.WriteString(w, "  # Every % is written %%, as Dovecot expands %-variables in plugin settings.\n")
	}
	if t.userinfo != "" {
		fmt.Fprintln(w, "  # The URL holds the password: doveconf -n hides it, this file does not.")
	}
	fmt.Fprintf(w, "  # A delivery waits for imserious's answer: at most %d attempts of %d s each.\n", attempts, int(attemptTimeout.Seconds()))
	fmt.Fprintf(w, "  push_notification_driver = ox:url=%s max_retries=%d timeout_msecs=%d\n",
		strings.ReplaceAll(t.url(), "%", "%%"), attempts-1, attemptTimeout.Milliseconds())
	fmt.Fprintln(w, "}")
	doveadmLines(w, cfg)
}

// write24 prints the Dovecot 2.4 settings.
func write24(w io.Writer, cfg *config.Config, t *target, detected string) {
	header(w, cfg, "2.4", detected)
	fmt.Fprint(w, `#
# For a file in conf.d: dovecot.conf must begin with dovecot_config_version
# and set dovecot_storage_version (Debian's does); 2.4 refuses the 2.3
# settings (plugin { }, mail_attribute_dict, max_retries).
#
# The OX push driver notifies for mail that dovecot-lda and LMTP deliver
# into INBOX. IMAP (APPEND, COPY, MOVE) never notifies: it needs no plugin.
protocol lda {
  mail_plugins {
    notify = yes
    push_notification = yes
  }
}
protocol lmtp {
  mail_plugins {
    notify = yes
    push_notification = yes
  }
}

# Required: the driver reads a per-user METADATA key. Keep yours if
# mail_attribute is set already: any dict works.
mail_attribute {
  dict file {
    path = %{home}/dovecot-attributes
  }
}
# Optional: lets users switch notifications on and off themselves with
# IMAP SETMETADATA (and shows METADATA to every IMAP client).
#protocol imap {
#  imap_metadata = yes
#}

push_notification imserious {
  driver = ox
`)
	comments(w, "  ", t.notes)
	if t.userinfo != "" {
		fmt.Fprintln(w, "  # [auth] user and pass percent-encoded; % is not doubled in 2.4.")
		fmt.Fprintln(w, "  # The URL holds the password: doveconf -n hides it, this file does not.")
	}
	fmt.Fprintf(w, "  ox_url = %s\n", t.url())
	fmt.Fprintf(w, "  # A delivery waits for imserious's answer: at most %d attempts of %d s each\n", attempts, int(attemptTimeout.Seconds()))
	fmt.Fprintln(w, "  # (2.4.1's defaults: one attempt of a minute).")
	fmt.Fprintf(w, "  http_client_request_timeout = %s\n", dovecotDuration(attemptTimeout))
	fmt.Fprintf(w, "  http_client_request_max_attempts = %d\n", attempts)
	if t.ca != nil {
		fmt.Fprintln(w, "  # Dovecot checks imserious's certificate and the URL's host against it.")
		comments(w, "  ", t.ca.notes)
		fmt.Fprintf(w, "  ssl_client_ca_file = %s\n", t.ca.file)
	}
	fmt.Fprintln(w, "}")
	doveadmLines(w, cfg)
}

// dovecotDuration writes d with a unit, as 2.4 requires ("2s").
func dovecotDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}
