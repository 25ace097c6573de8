package event

import (
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxValue is the most bytes of one IMSE_* value (spec §4). One value over
// the kernel's MAX_ARG_STRLEN (128 KiB on Linux) makes execve fail with
// E2BIG, and a mail can carry a subject that decodes to that much: RFC
// 2047 turns 4 characters into up to 9 bytes.
const MaxValue = 4 << 10

// CapValue cuts s to at most MaxValue bytes at a character boundary: a
// UTF-8 sequence is never split, so valid UTF-8 stays valid.
func CapValue(s string) string {
	if len(s) <= MaxValue {
		return s
	}
	i := MaxValue
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// value is what every IMSE_* value from an event goes through.
func value(s string) string {
	return CapValue(Sanitize(s))
}

// Env returns the IMSE_* variables of an event run in "NAME=value" form.
// count is the number of events coalesced into the run; remote is the
// HTTP peer of the last one.
//
// IMSE_REMOTE_IP is the plain address: an IPv4-mapped IPv6 peer is shown
// as IPv4 and a zone is dropped. When remote is not valid, IMSE_REMOTE_IP
// and IMSE_REMOTE_PORT are set but empty. IMSE_UID for an array of UIDs
// joins them with "," like an IMAP sequence set ("3,4,7"). IMSE_FROM and
// IMSE_SUBJECT are decoded (DecodeHeader); the _RAW variants and
// IMSE_SNIPPET are as received. Every value passes Sanitize and is capped
// at MaxValue bytes (CapValue); IMSE_UID is cut after the last UID that
// fits, so it never ends in part of a number.
func (e *Event) Env(count int, remote netip.AddrPort) []string {
	env := make([]string, 0, 16)
	env = append(env,
		"IMSE_USER="+value(e.User),
		"IMSE_EVENT="+value(e.Event),
		"IMSE_TRIGGER=event",
		"IMSE_COUNT="+strconv.Itoa(count),
	)
	ip, port := "", ""
	if remote.Addr().IsValid() {
		ip = remote.Addr().Unmap().WithZone("").String()
		port = strconv.Itoa(int(remote.Port()))
	}
	env = append(env, "IMSE_REMOTE_IP="+ip, "IMSE_REMOTE_PORT="+port)
	if e.Folder != nil {
		env = append(env, "IMSE_FOLDER="+value(*e.Folder))
	}
	if e.Unseen != nil {
		env = append(env, "IMSE_UNSEEN="+strconv.FormatUint(uint64(*e.Unseen), 10))
	}
	if len(e.UID) > 0 {
		env = append(env, "IMSE_UID="+joinUIDs(e.UID))
	}
	if e.UIDValidity != nil {
		env = append(env, "IMSE_UIDVALIDITY="+strconv.FormatUint(uint64(*e.UIDValidity), 10))
	}
	from, subject, snippet := deref(e.From), deref(e.Subject), deref(e.Snippet)
	env = append(env,
		"IMSE_FROM="+value(DecodeHeader(from)),
		"IMSE_SUBJECT="+value(DecodeHeader(subject)),
		"IMSE_FROM_RAW="+value(from),
		"IMSE_SUBJECT_RAW="+value(subject),
		"IMSE_SNIPPET="+value(snippet),
	)
	return env
}

// PeriodicEnv returns the IMSE_* variables of a periodic run, which has no
// event: only the handler's user and event name and the trigger.
func PeriodicEnv(user, event string) []string {
	return []string{
		"IMSE_USER=" + value(user),
		"IMSE_EVENT=" + value(event),
		"IMSE_TRIGGER=periodic",
	}
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// joinUIDs joins the UIDs that fit in MaxValue bytes: a list cut in the
// middle of a number would name a message that was never sent.
func joinUIDs(uids []uint32) string {
	var b strings.Builder
	b.Grow(min(len(uids)*6, MaxValue))
	for i, u := range uids {
		n := strconv.FormatUint(uint64(u), 10)
		sep := 0
		if i > 0 {
			sep = 1
		}
		if b.Len()+sep+len(n) > MaxValue {
			break
		}
		if sep > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n)
	}
	return b.String()
}
