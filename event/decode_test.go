package event

import (
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/imserious/imserious/internal/dovecotsamples"
)

func envMap(tb testing.TB, env []string) map[string]string {
	tb.Helper()
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			tb.Fatalf("env entry without '=': %q", kv)
		}
		if _, dup := m[k]; dup {
			tb.Fatalf("env has %s twice", k)
		}
		m[k] = v
	}
	return m
}

func ptr[T any](v T) *T { return &v }

func eqPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// TestSamples decodes every captured Dovecot body and checks what each case
// was captured for. A case without a check fails, so a new fixture line
// cannot slip through untested.
func TestSamples(t *testing.T) {
	remote := netip.MustParseAddrPort("[::ffff:127.0.0.1]:40000")
	type want struct {
		user           string
		uid            uint32
		uidValidity    uint32
		unseen         uint32
		from, subject  *string // raw, as Event fields
		snippet        *string
		envFrom, envSu string // IMSE_FROM, IMSE_SUBJECT
		envRawSubject  *string
		envSnippet     *string
	}
	plainFrom := "Alice Sender <sender@example.org>"
	wants := map[string]want{
		"plain text message": {user: "alice", uid: 2, uidValidity: 1795613200, unseen: 2,
			from: &plainFrom, subject: ptr("Hello plain"), snippet: ptr("This is the first test body. Second line."),
			envFrom: plainFrom, envSu: "Hello plain"},
		"MIME encoded-word From and Subject (sent raw, not decoded)": {user: "alice", uid: 3, uidValidity: 1795613200, unseen: 3,
			from:    ptr("=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.org>"),
			subject: ptr("=?UTF-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4g4pyT?="),
			snippet: ptr("Grüße aus München ✓ – body with ümlauts."),
			// The exact bytes (the base64 says "Grüße", with ü, not "Große"):
			// ü is C3 BC, ß is C3 9F, ✓ is E2 9C 93.
			envFrom: "J\xc3\xbcrgen M\xc3\xbcller <juergen@example.org>",
			envSu:   "Gr\xc3\xbc\xc3\x9fe aus M\xc3\xbcnchen \xe2\x9c\x93"},
		"raw 8-bit UTF-8 headers": {user: "alice", uid: 4, uidValidity: 1795613200, unseen: 4,
			from: ptr(`"Zoë Ångström" <zoe@example.org>`), subject: ptr("Raw 8bit Grüße ✓ 日本語"), snippet: ptr("plain body"),
			envFrom: `"Zoë Ångström" <zoe@example.org>`, envSu: "Raw 8bit Grüße ✓ 日本語"},
		"empty Subject header": {user: "alice", uid: 5, uidValidity: 1795613200, unseen: 5,
			from: ptr("sender@example.org"), subject: ptr(""), snippet: ptr("body of empty-subject message"),
			envFrom: "sender@example.org", envSu: ""},
		"no Subject header (key omitted)": {user: "alice", uid: 6, uidValidity: 1795613200, unseen: 6,
			from: ptr("sender@example.org"), subject: nil, snippet: ptr("body of no-subject message"),
			envFrom: "sender@example.org", envSu: ""},
		"no From header (key omitted)": {user: "alice", uid: 7, uidValidity: 1795613200, unseen: 7,
			from: nil, subject: ptr("no from header"), snippet: ptr("body of no-from message"),
			envFrom: "", envSu: "no from header"},
		"no From, no Subject, empty body": {user: "alice", uid: 8, uidValidity: 1795613200, unseen: 8,
			snippet: ptr("")},
		"JSON escaping: quotes, backslash, tab": {user: "alice", uid: 9, uidValidity: 1795613200, unseen: 9,
			from:    ptr(`"Doe, John \"JD\"" <john.doe@example.org>`),
			subject: ptr("quote \" backslash \\ tab\there  <b>&amp;"),
			snippet: ptr(`line1 "quoted" \ back tab`),
			envFrom: `"Doe, John \"JD\"" <john.doe@example.org>`,
			envSu:   "quote \" backslash \\ tab\there  <b>&amp;"}, // tab survives Sanitize
		"540-char subject, long body (snippet capped at 200 chars)": {user: "alice", uid: 10, uidValidity: 1795613200, unseen: 10,
			from: ptr("Long Sender <long@example.org>"), subject: ptr(strings.Repeat("Very long subject ", 30)),
			snippet: ptr("Line 000: The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij. Line 001: The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij. Line 002: The quick brown fox jumps over the"),
			envFrom: "Long Sender <long@example.org>", envSu: strings.Repeat("Very long subject ", 30)},
		"folded Subject (fold kept as \\n + spaces)": {user: "alice", uid: 11, uidValidity: 1795613200, unseen: 11,
			from: ptr("fold@example.org"), subject: ptr("folded subject part one\n  and part two"), snippet: ptr("folded body"),
			envFrom: "fold@example.org", envSu: "folded subject part one and part two",
			// The raw variant keeps the fold's spaces; only the newline goes.
			envRawSubject: ptr("folded subject part one   and part two")},
		"text/html only body": {user: "alice", uid: 12, uidValidity: 1795613200, unseen: 12,
			from: ptr("html@example.org"), subject: ptr("html only"), snippet: ptr("Hello HTML & world <3 second para"),
			envFrom: "html@example.org", envSu: "html only"},
		"multipart, latin1 quoted-printable text part + attachment": {user: "alice", uid: 13, uidValidity: 1795613200, unseen: 13,
			from: ptr("Multi <multi@example.org>"), subject: ptr("multipart with attachment"), snippet: ptr("Café text part in latin1."),
			envFrom: "Multi <multi@example.org>", envSu: "multipart with attachment"},
		"long UTF-8 body (snippet 200 chars, not bytes)": {user: "alice", uid: 14, uidValidity: 1795613200, unseen: 14,
			from: ptr("u@example.org"), subject: ptr("utf8 long"),
			snippet: ptr(strings.Repeat("Grüße ✓ 日本語 ", 16) + "Grüße ✓"),
			envFrom: "u@example.org", envSu: "utf8 long"},
		"invalid UTF-8 (U+FFFD) and control chars (\\u0001)": {user: "alice", uid: 15, uidValidity: 1795613200, unseen: 15,
			from: ptr("Caf\uFFFD <cafe@example.org>"), subject: ptr("ctl\x01char and latin1 caf\uFFFD end\x7f"),
			snippet: ptr("body caf\uFFFD\x01x"),
			envFrom: "Caf\uFFFD <cafe@example.org>", envSu: "ctl char and latin1 caf\uFFFD end ",
			envRawSubject: ptr("ctl char and latin1 caf\uFFFD end "), envSnippet: ptr("body caf\uFFFD x")},
		"LMTP, 2 recipients in one transaction (1/2)": {user: "alice", uid: 23, uidValidity: 1795613200, unseen: 23,
			from: &plainFrom, subject: ptr("Hello plain"), snippet: ptr("This is the first test body. Second line."),
			envFrom: plainFrom, envSu: "Hello plain"},
		"LMTP, 2 recipients in one transaction (2/2, same TCP connection)": {user: "bob", uid: 1, uidValidity: 1795613259, unseen: 1,
			from: &plainFrom, subject: ptr("Hello plain"), snippet: ptr("This is the first test body. Second line."),
			envFrom: plainFrom, envSu: "Hello plain"},
		"user_from_metadata option, metadata user=ox-alice@ctx5": {user: "ox-alice@ctx5", uid: 24, uidValidity: 1795613200, unseen: 24,
			from: ptr("sender@example.org"), snippet: ptr("body of no-subject message"), envFrom: "sender@example.org"},
		"URL without userinfo, with query string (no Authorization header)": {user: "alice", uid: 29, uidValidity: 1795613200, unseen: 29,
			snippet: ptr("")},
		"URL userinfo us%40er:p%3Ass%20w (percent-decoded into Basic auth)": {user: "alice", uid: 31, uidValidity: 1795613200, unseen: 31,
			snippet: ptr("")},
		"slash, emoji, U+2028, 0x1f, DEL in headers": {user: "alice", uid: 1, uidValidity: 1795613539, unseen: 1,
			from: ptr("a/b <a@example.org>"), subject: ptr("slash / emoji 😀 ls\u2028ps \x1f del\x7f nul-free"),
			snippet: ptr("emoji 😀 </script>"), envFrom: "a/b <a@example.org>",
			envSu: "slash / emoji 😀 ls ps   del  nul-free"},
	}
	seen := map[string]bool{}
	for _, s := range dovecotsamples.Load(t) {
		t.Run(s.Case, func(t *testing.T) {
			w, ok := wants[s.Case]
			if !ok {
				t.Fatalf("no expectations for fixture case %q", s.Case)
			}
			seen[s.Case] = true
			ev, err := Decode(s.Body)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if ev.User != w.user || ev.Event != "MessageNew" {
				t.Errorf("user, event = %q, %q; want %q, MessageNew", ev.User, ev.Event, w.user)
			}
			if ev.Folder == nil || *ev.Folder != "INBOX" {
				t.Errorf("folder = %v, want INBOX", ev.Folder)
			}
			if !slices.Equal(ev.UID, []uint32{w.uid}) {
				t.Errorf("uid = %v, want [%d]", ev.UID, w.uid)
			}
			if !eqPtr(ev.UIDValidity, &w.uidValidity) || !eqPtr(ev.Unseen, &w.unseen) {
				t.Errorf("uidvalidity, unseen = %v, %v; want %d, %d", ev.UIDValidity, ev.Unseen, w.uidValidity, w.unseen)
			}
			if !eqPtr(ev.From, w.from) || !eqPtr(ev.Subject, w.subject) || !eqPtr(ev.Snippet, w.snippet) {
				t.Errorf("from, subject, snippet = %q, %q, %q; want %q, %q, %q",
					deref(ev.From), deref(ev.Subject), deref(ev.Snippet), deref(w.from), deref(w.subject), deref(w.snippet))
			}

			env := envMap(t, ev.Env(2, remote))
			checks := map[string]string{
				"IMSE_USER": w.user, "IMSE_EVENT": "MessageNew", "IMSE_TRIGGER": "event",
				"IMSE_COUNT": "2", "IMSE_REMOTE_IP": "127.0.0.1", "IMSE_REMOTE_PORT": "40000",
				"IMSE_FOLDER": "INBOX", "IMSE_FROM": w.envFrom, "IMSE_SUBJECT": w.envSu,
			}
			if w.envRawSubject != nil {
				checks["IMSE_SUBJECT_RAW"] = *w.envRawSubject
			}
			if w.envSnippet != nil {
				checks["IMSE_SNIPPET"] = *w.envSnippet
			}
			for k, v := range checks {
				got, ok := env[k]
				if !ok {
					t.Errorf("%s not set", k)
				} else if got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			for _, k := range []string{"IMSE_FROM_RAW", "IMSE_SUBJECT_RAW", "IMSE_SNIPPET", "IMSE_UID", "IMSE_UIDVALIDITY", "IMSE_UNSEEN"} {
				if _, ok := env[k]; !ok {
					t.Errorf("%s not set", k)
				}
			}
			for k, v := range env {
				if v != Sanitize(v) {
					t.Errorf("%s is not sanitized: %q", k, v)
				}
			}
		})
	}
	for c := range wants {
		if !seen[c] {
			t.Errorf("expected fixture case %q is missing from the captured samples", c)
		}
	}
}

func TestDecodeValid(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Event
	}{
		{"minimal", `{"user":"a","event":"MessageNew"}`, Event{User: "a", Event: "MessageNew"}},
		{"case-insensitive event", `{"user":"a","event":"MAILBOXcreate"}`, Event{User: "a", Event: "MailboxCreate"}},
		{"whitespace around", " \t\r\n{ \"user\" : \"a\" , \"event\" : \"messageRead\" }\n", Event{User: "a", Event: "MessageRead"}},
		{"uid array", `{"user":"a","event":"MessageExpunge","imap-uid":[3, 4 ,7]}`,
			Event{User: "a", Event: "MessageExpunge", UID: []uint32{3, 4, 7}}},
		{"uid array of one", `{"user":"a","event":"FlagsSet","imap-uid":[0]}`,
			Event{User: "a", Event: "FlagsSet", UID: []uint32{0}}},
		{"uint32 bounds", `{"user":"a","event":"MessageNew","imap-uidvalidity":4294967295,"unseen":0,"imap-uid":4294967295}`,
			Event{User: "a", Event: "MessageNew", UIDValidity: ptr(uint32(4294967295)), Unseen: ptr(uint32(0)), UID: []uint32{4294967295}}},
		{"integral float forms", `{"user":"a","event":"MessageNew","unseen":5.0,"imap-uidvalidity":12e2,"imap-uid":[1.5e1,0.0,0e5]}`,
			Event{User: "a", Event: "MessageNew", Unseen: ptr(uint32(5)), UIDValidity: ptr(uint32(1200)), UID: []uint32{15, 0, 0}}},
		{"large exponent of zero", `{"user":"a","event":"MessageNew","unseen":0e999999999999}`,
			Event{User: "a", Event: "MessageNew", Unseen: ptr(uint32(0))}},
		{"nulls are absent", `{"user":"a","event":"MessageNew","folder":null,"from":null,"subject":null,"snippet":null,"unseen":null,"imap-uid":null,"imap-uidvalidity":null}`,
			Event{User: "a", Event: "MessageNew"}},
		{"unknown fields ignored, any shape", `{"x":{"user":1,"a":[{"}":"]"}]},"user":"a","Event":5,"USER":[],"event":"MessageNew","y":"\"}"}`,
			Event{User: "a", Event: "MessageNew"}},
		{"duplicate keys: last wins", `{"user":"a","user":"b","event":"MessageNew","unseen":-1,"unseen":3}`,
			Event{User: "b", Event: "MessageNew", Unseen: ptr(uint32(3))}},
		{"escaped key", `{"\u0075ser":"a","event":"MessageNew"}`, Event{User: "a", Event: "MessageNew"}},
		{"escapes in values", `{"user":"a\u00e9","event":"MessageNew","folder":"IN\"BOX\u0000"}`,
			Event{User: "aé", Event: "MessageNew", Folder: ptr("IN\"BOX\x00")}},
		{"invalid UTF-8 becomes U+FFFD", "{\"user\":\"a\",\"event\":\"MessageNew\",\"subject\":\"x\xffy\"}",
			Event{User: "a", Event: "MessageNew", Subject: ptr("x\uFFFDy")}},
		{"empty strings", `{"user":"a","event":"MessageNew","folder":"","from":"","subject":"","snippet":""}`,
			Event{User: "a", Event: "MessageNew", Folder: ptr(""), From: ptr(""), Subject: ptr(""), Snippet: ptr("")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.body))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !eventEqual(got, tt.want) {
				t.Errorf("got  %s\nwant %s", dump(got), dump(tt.want))
			}
		})
	}
}

func eventEqual(a, b Event) bool {
	return a.User == b.User && a.Event == b.Event &&
		eqPtr(a.Folder, b.Folder) && eqPtr(a.From, b.From) && eqPtr(a.Subject, b.Subject) &&
		eqPtr(a.Snippet, b.Snippet) && eqPtr(a.UIDValidity, b.UIDValidity) && eqPtr(a.Unseen, b.Unseen) &&
		slices.Equal(a.UID, b.UID) && (a.UID == nil) == (b.UID == nil)
}

func dump(e Event) string {
	b, _ := json.Marshal(e)
	return string(b)
}

func TestDecodeErrors(t *testing.T) {
	const ok = `"user":"a","event":"MessageNew"`
	tests := []struct {
		name   string
		body   string
		status int
		reason string // substring of Reason
	}{
		{"empty body", ``, 400, "not JSON"},
		{"only whitespace", " \n", 400, "not JSON"},
		{"garbage", `hello`, 400, "not JSON"},
		{"truncated", `{"user":"a"`, 400, "not JSON"},
		{"two values", `{` + ok + `}{}`, 400, "after top-level value"},
		{"trailing garbage", `{` + ok + `} x`, 400, "not JSON"},
		{"trailing comma", `{` + ok + `,}`, 400, "not JSON"},
		{"single quotes", `{'user':'a'}`, 400, "not JSON"},
		{"NUL byte", "{" + ok + "}\x00", 400, "not JSON"},
		{"raw control char in string", "{\"user\":\"a\x01\",\"event\":\"MessageNew\"}", 400, "not JSON"},
		{"BOM", "\xef\xbb\xbf{" + ok + "}", 400, "not JSON"},
		{"NaN", `{` + ok + `,"unseen":NaN}`, 400, "not JSON"},
		{"leading zero", `{` + ok + `,"unseen":01}`, 400, "not JSON"},

		{"array", `[]`, 422, "array"},
		{"string", `"x"`, 422, "string"},
		{"number", `12`, 422, "number"},
		{"null", `null`, 422, "null"},
		{"bool", `true`, 422, "boolean"},
		{"empty object", `{}`, 422, `"user" is missing`},
		{"no user", `{"event":"MessageNew"}`, 422, `"user" is missing`},
		{"user null", `{"user":null,"event":"MessageNew"}`, 422, `"user" is not a string`},
		{"user number", `{"user":1,"event":"MessageNew"}`, 422, `"user" is not a string`},
		{"user array", `{"user":["a"],"event":"MessageNew"}`, 422, `"user" is not a string`},
		{"user empty", `{"user":"","event":"MessageNew"}`, 422, `"user" is empty`},
		{"user with NUL", `{"user":"a\u0000b","event":"MessageNew"}`, 422, `control`},
		{"user with newline", `{"user":"a\nb","event":"MessageNew"}`, 422, `control`},
		{"no event", `{"user":"a"}`, 422, `"event" is missing`},
		{"event null", `{"user":"a","event":null}`, 422, `"event" is not a string`},
		{"event object", `{"user":"a","event":{}}`, 422, `"event" is not a string`},
		{"unknown event", `{"user":"a","event":"MessageNw"}`, 422, `unknown event "MessageNw"`},
		{"event with space", `{"user":"a","event":"MessageNew "}`, 422, `unknown event`},
		{"event unicode fold", `{"user":"a","event":"Me\u017f\u017fageNew"}`, 422, `unknown event`},
		{"event long", `{"user":"a","event":"` + strings.Repeat("x", 1000) + `"}`, 422, `…`},
		{"folder number", `{` + ok + `,"folder":1}`, 422, `"folder" is not a string`},
		{"from bool", `{` + ok + `,"from":false}`, 422, `"from" is not a string`},
		{"subject array", `{` + ok + `,"subject":["x"]}`, 422, `"subject" is not a string`},
		{"snippet object", `{` + ok + `,"snippet":{}}`, 422, `"snippet" is not a string`},
		{"unseen string", `{` + ok + `,"unseen":"5"}`, 422, `"unseen" is not a number`},
		{"unseen negative", `{` + ok + `,"unseen":-1}`, 422, `"unseen" is negative`},
		{"unseen minus zero", `{` + ok + `,"unseen":-0}`, 422, `"unseen" is negative`},
		{"unseen fraction", `{` + ok + `,"unseen":1.5}`, 422, `"unseen" is not an integer`},
		{"unseen tiny fraction", `{` + ok + `,"unseen":4294967295.0000000001}`, 422, `"unseen" is not an integer`},
		{"unseen negative exponent", `{` + ok + `,"unseen":15e-1}`, 422, `"unseen" is not an integer`},
		{"unseen too big", `{` + ok + `,"unseen":4294967296}`, 422, `"unseen" is out of range`},
		{"unseen far too big", `{` + ok + `,"unseen":99999999999999999999999}`, 422, `"unseen" is out of range`},
		{"unseen big exponent", `{` + ok + `,"unseen":1e10}`, 422, `"unseen" is out of range`},
		{"unseen huge exponent", `{` + ok + `,"unseen":1e99999999999999999}`, 422, `"unseen" is out of range`},
		{"unseen bool", `{` + ok + `,"unseen":true}`, 422, `"unseen" is not a number`},
		{"uidvalidity array", `{` + ok + `,"imap-uidvalidity":[1]}`, 422, `"imap-uidvalidity" is not a number`},
		{"uidvalidity negative", `{` + ok + `,"imap-uidvalidity":-5}`, 422, `"imap-uidvalidity" is negative`},
		{"uid empty array", `{` + ok + `,"imap-uid":[ ]}`, 422, `"imap-uid" is an empty array`},
		{"uid string", `{` + ok + `,"imap-uid":"1"}`, 422, `"imap-uid" is not a number`},
		{"uid array of string", `{` + ok + `,"imap-uid":[1,"2"]}`, 422, `"imap-uid" element is not a number`},
		{"uid array nested", `{` + ok + `,"imap-uid":[[1]]}`, 422, `"imap-uid" element is not a number`},
		{"uid array null element", `{` + ok + `,"imap-uid":[1,null]}`, 422, `"imap-uid" element is not a number`},
		{"uid array negative", `{` + ok + `,"imap-uid":[1,-2]}`, 422, `"imap-uid" element is negative`},
		{"uid array too big", `{` + ok + `,"imap-uid":[4294967296]}`, 422, `"imap-uid" element is out of range`},
		{"uid fraction", `{` + ok + `,"imap-uid":2.5}`, 422, `"imap-uid" is not an integer`},
		{"duplicate: last is bad", `{` + ok + `,"unseen":1,"unseen":-1}`, 422, `"unseen" is negative`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.body))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode error = %v (%T), want *Error", err, err)
			}
			if e.Status != tt.status || !strings.Contains(e.Reason, tt.reason) {
				t.Errorf("got %d %q, want %d containing %q", e.Status, e.Reason, tt.status, tt.reason)
			}
			if len(e.Reason) > 200 {
				t.Errorf("reason is %d bytes long, want short", len(e.Reason))
			}
			if !strings.HasPrefix(err.Error(), "event: ") {
				t.Errorf("Error() = %q, want the package prefix", err.Error())
			}
		})
	}
}

// TestDecodeDeepNesting: an unknown field may nest deeply; encoding/json
// refuses past 10000 levels, and neither case may crash or accept garbage.
func TestDecodeDeepNesting(t *testing.T) {
	for _, depth := range []int{100, 20000} {
		body := `{"user":"a","event":"MessageNew","x":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`
		ev, err := Decode([]byte(body))
		if depth < 10000 {
			if err != nil || ev.User != "a" {
				t.Errorf("depth %d: %v", depth, err)
			}
		} else if e, ok := err.(*Error); !ok || e.Status != 400 {
			t.Errorf("depth %d: err = %v, want 400", depth, err)
		}
	}
}

func TestCanonical(t *testing.T) {
	for _, n := range Names {
		for _, in := range []string{n, strings.ToLower(n), strings.ToUpper(n), strings.ToLower(n[:1]) + n[1:]} {
			if got, ok := Canonical(in); !ok || got != n {
				t.Errorf("Canonical(%q) = %q, %v; want %q", in, got, ok, n)
			}
		}
	}
	for _, in := range []string{"", "Message", "MessageNew ", " MessageNew", "MessageNew\x00",
		"Me\u017f\u017fageNew", "FlagsClear\u212a", "MESSAGENEW!", "message_new"} {
		if got, ok := Canonical(in); ok {
			t.Errorf("Canonical(%q) = %q, true; want false", in, got)
		}
	}
}

func TestValidate(t *testing.T) {
	good := Event{User: "alice", Event: "MessageNew", UID: []uint32{1}}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(good) = %v", err)
	}
	for _, bad := range []Event{
		{User: "", Event: "MessageNew"},
		{User: "a\x00", Event: "MessageNew"},
		{User: "a", Event: "messageNew"},
		{User: "a", Event: "Bogus"},
		{User: "a", Event: "MessageNew", UID: []uint32{}},
	} {
		err := bad.Validate()
		var e *Error
		if !errors.As(err, &e) || e.Status != 422 {
			t.Errorf("Validate(%+v) = %v, want a 422 *Error", bad, err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	body := dovecotsamples.Load(b)[0].Body
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}
