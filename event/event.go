// Package event owns the notification: decoding Dovecot's OX JSON body,
// validating it, and turning it into the IMSE_* environment of a command.
package event

import "net/netip"

// Names are the 12 RFC 5423 event names Dovecot's push_notification knows,
// in their canonical CamelCase spelling.
var Names = [12]string{
	"FlagsClear", "FlagsSet", "MailboxCreate", "MailboxDelete",
	"MailboxRename", "MailboxSubscribe", "MailboxUnsubscribe",
	"MessageAppend", "MessageExpunge", "MessageNew", "MessageRead",
	"MessageTrash",
}

// Event is one validated notification. Pointer and nil-slice fields are
// absent when nil.
type Event struct {
	User        string
	Event       string // canonical CamelCase
	Folder      *string
	UIDValidity *uint32
	UID         []uint32 // nil when absent; one element for a plain number
	From        *string
	Subject     *string
	Snippet     *string
	Unseen      *uint32
}

// Remote is the HTTP peer an event came from.
type Remote = netip.AddrPort

// Canonical returns the CamelCase spelling of an event name matched
// case-insensitively against Names ("messageNew" -> "MessageNew").
//
// The match folds ASCII letters only, as the original (strum's
// ascii_case_insensitive) did: strings.EqualFold would also accept
// look-alikes such as "Meſſagenew" (U+017F folds to 's') or a Kelvin sign
// for 'k', which no mail server sends and which would let odd spellings
// through to the logs and the environment.
func Canonical(name string) (string, bool) {
	for _, n := range Names {
		if asciiEqualFold(name, n) {
			return n, true
		}
	}
	return "", false
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// ValidUser reports whether s can be the user of an event: not empty, and
// without NUL or other control characters (C0, DEL, C1). Such a name can
// never be a Dovecot login or a configured handler user, and refusing it
// keeps it out of the logs and the IPC between processes.
func ValidUser(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if isControl(r) {
			return false
		}
	}
	return true
}

// Validate checks an Event that did not come from Decode, such as one
// received from a less privileged process: a receiver must not trust the
// sender to have validated it. The error is an *Error with status 422.
func (e *Event) Validate() error {
	if !ValidUser(e.User) {
		return invalid("invalid user")
	}
	if c, ok := Canonical(e.Event); !ok || c != e.Event {
		return invalid("event name is not canonical")
	}
	if e.UID != nil && len(e.UID) == 0 {
		return invalid(`"imap-uid" is an empty array`)
	}
	return nil
}
