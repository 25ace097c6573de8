package event

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/imserious/imserious/internal/dovecotsamples"
)

// FuzzDecode: Decode never panics; every error is a 400 or 422 *Error with
// a short reason; anything accepted has a canonical event, a valid user
// and a clean environment, and agrees with a plain encoding/json decoding
// into a map (the differential oracle for the hand-written member scan).
func FuzzDecode(f *testing.F) {
	for _, s := range dovecotsamples.Load(f) {
		f.Add(s.Body)
	}
	for _, s := range []string{
		``, `{}`, `[]`, `null`, `{"user":"a","event":"x"}`,
		`{"user":"a","event":"MessageNew","imap-uid":[1,2,3]}`,
		`{"user":"a","event":"MessageNew","imap-uid":[]}`,
		`{"user":"a","event":"MessageNew","unseen":1e3,"imap-uidvalidity":-0.0}`,
		`{"\u0075ser":"a","event":"MESSAGENEW","x":{"y":["}",{"]":1}]}}`,
		`{"user":"a","user":"b","event":"MessageNew","event":"FlagsSet"}`,
		"{\"user\":\"a\xff\",\"event\":\"MessageNew\",\"subject\":\"\\u0000\\u2028\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := Decode(body)

		var ref map[string]json.RawMessage
		refErr := json.Unmarshal(body, &ref)
		var syn *json.SyntaxError
		refSyntax := errors.As(refErr, &syn)

		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is a %T, not *Error", err, err)
			}
			if e.Status != 400 && e.Status != 422 {
				t.Fatalf("status %d", e.Status)
			}
			if len(e.Reason) > 200 || !utf8.ValidString(e.Reason) || strings.ContainsAny(e.Reason, "\x00\n\r") {
				t.Fatalf("unsafe reason %q", e.Reason)
			}
			if (e.Status == 400) != refSyntax {
				t.Fatalf("status %d but encoding/json says %v", e.Status, refErr)
			}
			return
		}
		if refErr != nil || ref == nil {
			t.Fatalf("accepted a body encoding/json refuses as an object: %v", refErr)
		}
		if c, ok := Canonical(ev.Event); !ok || c != ev.Event {
			t.Fatalf("event %q is not canonical", ev.Event)
		}
		if !ValidUser(ev.User) {
			t.Fatalf("user %q is not valid", ev.User)
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("accepted event does not validate: %v", err)
		}
		var user, event string
		if json.Unmarshal(ref["user"], &user) != nil || user != ev.User {
			t.Fatalf("user %q, encoding/json says %q", ev.User, user)
		}
		if json.Unmarshal(ref["event"], &event) != nil || !asciiEqualFold(event, ev.Event) {
			t.Fatalf("event %q, encoding/json says %q", ev.Event, event)
		}
		for name, got := range map[string]*string{"folder": ev.Folder, "from": ev.From, "subject": ev.Subject, "snippet": ev.Snippet} {
			var want *string
			if raw, ok := ref[name]; ok {
				if err := json.Unmarshal(raw, &want); err != nil {
					t.Fatalf("%s accepted, encoding/json says %v", name, err)
				}
			}
			if !eqPtr(got, want) {
				t.Fatalf("%s = %v, encoding/json says %v", name, got, want)
			}
		}
		for _, kv := range ev.Env(1, netip.MustParseAddrPort("127.0.0.1:1")) {
			if strings.ContainsRune(kv, 0) || !utf8.ValidString(kv) || strings.ContainsAny(kv, "\n\r") {
				t.Fatalf("unsafe env entry %q", kv)
			}
		}
	})
}

// FuzzSanitize: the output never has NUL or control characters other than
// tab, never has U+2028/U+2029, and is valid UTF-8; clean input comes back
// unchanged; Sanitize is idempotent.
func FuzzSanitize(f *testing.F) {
	for _, s := range []string{"", "plain", "a\x00b", "\t\n\r\x7f", "\u0085\u2028\u2029", "\xff\xc3", "Grüße 😀"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := Sanitize(in)
		if !utf8.ValidString(out) {
			t.Fatalf("Sanitize(%q) = %q is not valid UTF-8", in, out)
		}
		for _, r := range out {
			if (isControl(r) && r != '\t') || r == '\u2028' || r == '\u2029' {
				t.Fatalf("Sanitize(%q) = %q keeps %U", in, out, r)
			}
		}
		if Sanitize(out) != out {
			t.Fatalf("Sanitize is not idempotent on %q", in)
		}
		if len(out) > len(in)*3 {
			t.Fatalf("Sanitize(%q) grew to %d bytes", in, len(out))
		}
	})
}
