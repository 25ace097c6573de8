package event

import (
	"encoding/base64"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEnvAllFields(t *testing.T) {
	ev, err := Decode([]byte(`{"user":"alice","event":"messagenew","folder":"Lists/go\u0000","imap-uidvalidity":7,
		"imap-uid":[3,4,7],"from":"=?iso-8859-1?q?J=FCrgen?= <j@example.org>","subject":"a\u0000b\r\n\tc",
		"snippet":"x\u2029y","unseen":0}`))
	if err != nil {
		t.Fatal(err)
	}
	got := ev.Env(3, netip.MustParseAddrPort("[fe80::1%eth0]:12345"))
	want := []string{
		"IMSE_USER=alice",
		"IMSE_EVENT=MessageNew",
		"IMSE_TRIGGER=event",
		"IMSE_COUNT=3",
		"IMSE_REMOTE_IP=fe80::1",
		"IMSE_REMOTE_PORT=12345",
		"IMSE_FOLDER=Lists/go",
		"IMSE_UNSEEN=0",
		"IMSE_UID=3,4,7",
		"IMSE_UIDVALIDITY=7",
		"IMSE_FROM=Jürgen <j@example.org>",
		"IMSE_SUBJECT=ab c",
		"IMSE_FROM_RAW==?iso-8859-1?q?J=FCrgen?= <j@example.org>",
		"IMSE_SUBJECT_RAW=ab  \tc",
		"IMSE_SNIPPET=x y",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Env:\n got %q\nwant %q", got, want)
	}
}

func TestEnvMinimal(t *testing.T) {
	ev := Event{User: "bob", Event: "MessageNew"}
	env := envMap(t, ev.Env(1, netip.MustParseAddrPort("192.0.2.1:80")))
	for _, k := range []string{"IMSE_FOLDER", "IMSE_UNSEEN", "IMSE_UID", "IMSE_UIDVALIDITY"} {
		if v, ok := env[k]; ok {
			t.Errorf("%s = %q is set for an event without it", k, v)
		}
	}
	for _, k := range []string{"IMSE_FROM", "IMSE_SUBJECT", "IMSE_FROM_RAW", "IMSE_SUBJECT_RAW", "IMSE_SNIPPET"} {
		if v, ok := env[k]; !ok || v != "" {
			t.Errorf("%s = %q, %v; want set and empty", k, v, ok)
		}
	}
	if env["IMSE_REMOTE_IP"] != "192.0.2.1" || env["IMSE_REMOTE_PORT"] != "80" || env["IMSE_COUNT"] != "1" {
		t.Errorf("remote/count wrong: %v", env)
	}
}

func TestEnvRemote(t *testing.T) {
	ev := Event{User: "bob", Event: "MessageNew"}
	for _, tt := range []struct {
		remote   netip.AddrPort
		ip, port string
	}{
		{netip.MustParseAddrPort("[::ffff:10.1.2.3]:5"), "10.1.2.3", "5"},
		{netip.MustParseAddrPort("[2001:db8::1]:443"), "2001:db8::1", "443"},
		{netip.AddrPort{}, "", ""},
	} {
		env := envMap(t, ev.Env(1, tt.remote))
		if env["IMSE_REMOTE_IP"] != tt.ip || env["IMSE_REMOTE_PORT"] != tt.port {
			t.Errorf("%v: ip, port = %q, %q; want %q, %q", tt.remote, env["IMSE_REMOTE_IP"], env["IMSE_REMOTE_PORT"], tt.ip, tt.port)
		}
	}
}

func TestPeriodicEnv(t *testing.T) {
	got := PeriodicEnv("alice", "MessageNew")
	want := []string{"IMSE_USER=alice", "IMSE_EVENT=MessageNew", "IMSE_TRIGGER=periodic"}
	if !slices.Equal(got, want) {
		t.Errorf("PeriodicEnv = %q, want %q", got, want)
	}
	if got := PeriodicEnv("a\nb", "MessageNew")[0]; got != "IMSE_USER=a b" {
		t.Errorf("PeriodicEnv does not sanitize: %q", got)
	}
}

func TestSanitize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain ascii ~!", "plain ascii ~!"},
		{"tab\tkept", "tab\tkept"},
		{"nul\x00gone", "nulgone"},
		{"\x00\x00", ""},
		{"nl\ncr\r", "nl cr "},
		{"c0 \x01\x1b[31m\x1f", "c0   [31m "},
		{"del\x7f", "del "},
		{"c1 \u0080\u0085\u009b\u009f", "c1     "},
		{"not c1 \u00a0\u00e9", "not c1 \u00a0\u00e9"},
		{"ls\u2028ps\u2029", "ls ps "},
		{"bad \xff\xfe utf8 \xc3", "bad \uFFFD\uFFFD utf8 \uFFFD"},
		{"raw c1 byte \x85", "raw c1 byte \uFFFD"},
		{"emoji 😀 日本語 \uFFFD", "emoji 😀 日本語 \uFFFD"},
	}
	for _, tt := range tests {
		if got := Sanitize(tt.in); got != tt.want {
			t.Errorf("Sanitize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSanitizeCleanDoesNotAllocate(t *testing.T) {
	s := strings.Repeat("Grüße ✓ tab\t", 10)
	if n := testing.AllocsPerRun(100, func() { _ = Sanitize(s) }); n != 0 {
		t.Errorf("Sanitize of a clean string allocates %v times", n)
	}
}

func TestDecodeHeader(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.org>", "Jürgen Müller <juergen@example.org>"},
		{"=?UTF-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4g4pyT?=", "Grüße aus München ✓"},
		{"=?utf-8?b?R3LDvMOfZQ==?=", "Grüße"},
		{"=?us-ascii?q?plain_word?=", "plain word"},
		{"=?ascii?q?a=FFb?=", "a\uFFFDb"},
		{"=?ISO-8859-1?Q?Caf=E9?=", "Café"},
		{"=?latin1?q?Caf=E9?=", "Café"},
		{"=?iso8859-1?q?=A4?=", "¤"},
		{"=?iso-8859-15?q?=A4uro_=BC?=", "€uro Œ"},
		{"=?windows-1252?q?=80_=93quoted=94_=85?=", "€ “quoted” …"},
		{"=?cp1252?q?=81?=", "\uFFFD"},
		{"=?windows-1252?q?=E9?=", "é"},
		{"=?utf-8*en?q?hi?=", "hi"},
		// Whitespace (folding included) between two encoded-words vanishes.
		{"=?utf-8?q?a?=\r\n =?utf-8?q?b?=", "ab"},
		{"=?utf-8?q?a?= x =?utf-8?q?b?=", "a x b"},
		// Folding.
		{"folded subject part one\n  and part two", "folded subject part one and part two"},
		{"crlf\r\n\tfold", "crlf fold"},
		{"not a fold\nx", "not a fold\nx"},
		{"trailing\n", "trailing\n"},
		{"trailing fold\n ", "trailing fold "},
		// Failures keep the raw (unfolded) text.
		{"=?koi8-r?q?=F0=D2=C9?= and\n more", "=?koi8-r?q?=F0=D2=C9?= and more"},
		{"=?utf-8?x?bad?=", "=?utf-8?x?bad?="},
		{"=?utf-8?b?!!!?=", "=?utf-8?b?!!!?="},
		{"=?broken", "=?broken"},
	}
	for _, tt := range tests {
		if got := DecodeHeader(tt.in); got != tt.want {
			t.Errorf("DecodeHeader(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestCharsetTables checks the single-byte tables against facts: every
// byte maps to valid UTF-8, latin1 is the identity, and the documented
// differences hold.
func TestCharsetTables(t *testing.T) {
	for i, r := range windows1252High {
		if !utf8.ValidRune(r) {
			t.Errorf("windows-1252 0x%X -> invalid rune", 0x80+i)
		}
		if i >= 0x20 && r != rune(0x80+i) {
			t.Errorf("windows-1252 0x%X = %U, want latin1 %U", 0x80+i, r, 0x80+i)
		}
	}
	diff := 0
	for i, r := range iso885915High {
		if r != rune(0x80+i) {
			diff++
		}
	}
	if diff != 8 {
		t.Errorf("iso-8859-15 differs from latin1 in %d places, want 8", diff)
	}
}

// TestEnvValuesCapped checks that no value from a mail exceeds MaxValue,
// however it is encoded, that the cut never splits a character, and that
// a list of UIDs is cut between numbers.
func TestEnvValuesCapped(t *testing.T) {
	// 60 KiB of RFC 2047 encoded-words, which decode to multi-byte text
	// (and the whitespace between them vanishes).
	word := "=?UTF-8?B?" + base64.StdEncoding.EncodeToString([]byte("Grüße aus München ✓ 日本語")) + "?="
	var enc strings.Builder
	for enc.Len() < 60<<10 {
		enc.WriteString(word + " ")
	}
	encoded := enc.String()
	// Raw: three-byte characters, so that MaxValue falls inside one.
	raw := strings.Repeat("€", 60<<10/3)
	folder := strings.Repeat("x", 60<<10)
	var uids []uint32
	for i := range 20000 {
		uids = append(uids, uint32(4000000000+i))
	}
	ev := Event{User: "alice", Event: "MessageNew", Subject: &encoded, From: &raw, Snippet: &raw, Folder: &folder, UID: uids}
	env := envMap(t, ev.Env(1, netip.MustParseAddrPort("192.0.2.1:80")))
	for k, v := range env {
		if len(v) > MaxValue {
			t.Errorf("%s is %d bytes, over %d", k, len(v), MaxValue)
		}
		if !utf8.ValidString(v) {
			t.Errorf("%s is not valid UTF-8 after the cut: ...%q", k, v[max(0, len(v)-8):])
		}
	}
	full := DecodeHeader(encoded)
	if s := env["IMSE_SUBJECT"]; len(s) < MaxValue-utf8.UTFMax || !strings.HasPrefix(full, s) {
		t.Errorf("IMSE_SUBJECT (%d bytes) is not the longest prefix of the decoded subject that fits", len(s))
	}
	if s := env["IMSE_FROM"]; len(s) != MaxValue/3*3 || strings.Trim(s, "€") != "" {
		t.Errorf("IMSE_FROM is %d bytes of %q..., want %d bytes of whole characters", len(s), s[:6], MaxValue/3*3)
	}
	if s := env["IMSE_SUBJECT_RAW"]; !strings.HasPrefix(encoded, s) || len(s) != MaxValue {
		t.Errorf("IMSE_SUBJECT_RAW is %d bytes, want the first %d", len(s), MaxValue)
	}
	got := strings.Split(env["IMSE_UID"], ",")
	if len(got) == 0 || len(env["IMSE_UID"]) > MaxValue || len(env["IMSE_UID"])+11 <= MaxValue {
		t.Fatalf("IMSE_UID is %d bytes: not the most whole UIDs that fit", len(env["IMSE_UID"]))
	}
	for i, u := range got {
		if u != strconv.FormatUint(uint64(uids[i]), 10) {
			t.Fatalf("IMSE_UID item %d is %q, want %d: a number was cut", i, u, uids[i])
		}
	}
	if p := PeriodicEnv(strings.Repeat("ü", 3000), "MessageNew")[0]; len(p) > len("IMSE_USER=")+MaxValue || !utf8.ValidString(p) {
		t.Errorf("PeriodicEnv user not capped: %d bytes", len(p))
	}
}

func TestCapValue(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
	}{
		{"", 0},
		{strings.Repeat("a", MaxValue), MaxValue},
		{strings.Repeat("a", MaxValue+1), MaxValue},
		{strings.Repeat("a", MaxValue-1) + "é", MaxValue - 1},
		{strings.Repeat("a", MaxValue-2) + "€", MaxValue - 2},
		{strings.Repeat("a", MaxValue-3) + "😀", MaxValue - 3},
		{strings.Repeat("a", MaxValue-4) + "😀", MaxValue},
	} {
		got := CapValue(tt.in)
		if len(got) != tt.want || !strings.HasPrefix(tt.in, got) || !utf8.ValidString(got) {
			t.Errorf("CapValue of %d bytes: %d bytes, want %d", len(tt.in), len(got), tt.want)
		}
	}
}
