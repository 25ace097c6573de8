package event

import (
	"net/netip"
	"strconv"
	"strings"
)

// Env returns the IMSE_* variables of an event run in "NAME=value" form.
// count is the number of events coalesced into the run; remote is the
// HTTP peer of the last one.
//
// IMSE_REMOTE_IP is the plain address: an IPv4-mapped IPv6 peer is shown
// as IPv4 and a zone is dropped. When remote is not valid, IMSE_REMOTE_IP
// and IMSE_REMOTE_PORT are set but empty. IMSE_UID for an array of UIDs
// joins them with "," like an IMAP sequence set ("3,4,7"). IMSE_FROM and
// IMSE_SUBJECT are decoded (DecodeHeader); the _RAW variants and
// IMSE_SNIPPET are as received. Every value passes Sanitize.
func (e *Event) Env(count int, remote netip.AddrPort) []string {
	env := make([]string, 0, 16)
	env = append(env,
		"IMSE_USER="+Sanitize(e.User),
		"IMSE_EVENT="+Sanitize(e.Event),
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
		env = append(env, "IMSE_FOLDER="+Sanitize(*e.Folder))
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
		"IMSE_FROM="+Sanitize(DecodeHeader(from)),
		"IMSE_SUBJECT="+Sanitize(DecodeHeader(subject)),
		"IMSE_FROM_RAW="+Sanitize(from),
		"IMSE_SUBJECT_RAW="+Sanitize(subject),
		"IMSE_SNIPPET="+Sanitize(snippet),
	)
	return env
}

// PeriodicEnv returns the IMSE_* variables of a periodic run, which has no
// event: only the handler's user and event name and the trigger.
func PeriodicEnv(user, event string) []string {
	return []string{
		"IMSE_USER=" + Sanitize(user),
		"IMSE_EVENT=" + Sanitize(event),
		"IMSE_TRIGGER=periodic",
	}
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func joinUIDs(uids []uint32) string {
	var b strings.Builder
	b.Grow(len(uids) * 6)
	for i, u := range uids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(u), 10))
	}
	return b.String()
}
