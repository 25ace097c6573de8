package config

import (
	"errors"
	"fmt"

	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/privsep"
)

// ErrAccountRefused is wrapped by DynamicAccount's error when the rules of
// the handler refuse the account, or the request, for the user: an event
// for that user runs nothing. A missing account wraps privsep.ErrNoAccount
// instead, and a failed lookup its cause.
var ErrAccountRefused = errors.New("account refused by the handler's rules")

// accountError is one of DynamicAccount's answers: a message fit for a
// warn line, and what it wraps.
type accountError struct {
	msg  string
	errs []error
}

func (e *accountError) Error() string   { return e.msg }
func (e *accountError) Unwrap() []error { return e.errs }

func refused(cause error, format string, args ...any) error {
	errs := []error{ErrAccountRefused}
	if cause != nil {
		errs = append(errs, cause)
	}
	return &accountError{msg: fmt.Sprintf(format, args...), errs: errs}
}

// DynamicAccount returns the account a Dynamic handler runs as for an
// event's user (spec §5: the parent starts an exec process for it on
// demand), after checking every rule of issue 10: h is Dynamic, user is a
// valid Dovecot user that h's user matches (MatchUser), run_as expands
// for it to a valid account name (ExpandRunAs, ValidAccountName), the
// account exists, and it is neither uid 0, nor primary gid 0, nor below
// h.MinUID, nor the [privsep] user (by name, or by uid: that one is
// looked up too). The parent calls it when the network process asks for
// an exec process for (h, user), so nothing the network process sends is
// trusted: the answer depends on the configuration and the system's
// account database alone.
//
// Every error says why in words fit for a warn line, e.g.
//
//	account "bob" has uid 999, below min_uid 1000
//
// and wraps ErrAccountRefused, or privsep.ErrNoAccount for an account
// that does not exist (users without a system account are common under a
// glob), or the cause of a failed lookup. It reads the account database
// on every call (twice: the account and the [privsep] user); callers that
// want to spare it cache the answer for a while. It changes nothing and is
// safe to call from several goroutines.
//
// Security: this is the parent's gate between a less privileged process's
// request and a uid change; the checks are those Resolve applies to a
// handler for one user with %-variables, plus the network process's own
// account, which must never run commands.
func (c *Config) DynamicAccount(h *Handler, user string) (privsep.Account, error) {
	switch {
	case h == nil:
		return privsep.Account{}, refused(nil, "no handler")
	case !h.Dynamic:
		return privsep.Account{}, refused(nil, "handler[%d] (line %d) has no per-user account: its user %q is not a glob or its run_as %q has no %%-variables", h.Number, h.Line, h.User, h.RunAs)
	case !event.ValidUser(user):
		return privsep.Account{}, refused(nil, "user %q is not a valid Dovecot user (empty, or a control character)", user)
	case !MatchUser(h.User, user):
		return privsep.Account{}, refused(nil, "user %q does not match handler[%d]'s user %q", user, h.Number, h.User)
	}
	name, err := ExpandRunAs(h.RunAs, user)
	if err != nil {
		return privsep.Account{}, refused(err, "run_as %q: %v", h.RunAs, err)
	}
	if !ValidAccountName(name) {
		return privsep.Account{}, refused(nil, "run_as %q gives %q for the user %q, which cannot name an account", h.RunAs, name, user)
	}
	a, err := systemAccount(name)
	switch {
	case errors.Is(err, privsep.ErrNoAccount):
		return privsep.Account{}, &accountError{msg: fmt.Sprintf("account %q (run_as %q for %q) does not exist", name, h.RunAs, user), errs: []error{err}}
	case err != nil:
		return privsep.Account{}, &accountError{msg: fmt.Sprintf("cannot look up account %q (run_as %q for %q): %v", name, h.RunAs, user, lookupCause(err)), errs: []error{err}}
	}
	if err := c.CheckDynamicAccount(h, a); err != nil {
		return privsep.Account{}, err
	}
	ps, err := systemAccount(c.Privsep.User)
	switch {
	case err != nil:
		// Without it, the account cannot be told apart from the network
		// process's: refuse rather than guess.
		return privsep.Account{}, refused(err, "cannot check account %q against the [privsep] user %q: %v", name, c.Privsep.User, lookupCause(err))
	case ps.UID == a.UID:
		return privsep.Account{}, refused(nil, "account %q has uid %d, the uid of the [privsep] user %q, which runs the network process: commands never run as it", name, a.UID, c.Privsep.User)
	}
	return a, nil
}

// CheckDynamicAccount applies the rules of a Dynamic handler to an
// account already looked up: not uid 0, not primary gid 0, a uid of at
// least h.MinUID, not the [privsep] user by name. DynamicAccount applies
// them (and the [privsep] user's uid) to a new account; the parent
// applies them again to each account it streams the handler to, so the
// rules are written once. The error wraps ErrAccountRefused.
func (c *Config) CheckDynamicAccount(h *Handler, a privsep.Account) error {
	switch {
	case a.UID == 0:
		return refused(nil, "account %q has uid 0: commands never run as root", a.Name)
	case a.GID == 0:
		return refused(nil, "account %q has primary group 0 (root's): commands never run with root's group", a.Name)
	case a.UID < h.MinUID:
		return refused(nil, "account %q has uid %d, below min_uid %d", a.Name, a.UID, h.MinUID)
	case a.Name == c.Privsep.User:
		return refused(nil, "account %q is the [privsep] user, which runs the network process: commands never run as it", a.Name)
	}
	return nil
}

// lookupCause drops privsep.LookupAccount's `account "x": ` prefix, which
// the messages above say in their own words.
func lookupCause(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}

// AccountSummary says whom h's command runs as, for reports such as
// imseriousctl check: "alice (uid 1001, gid 1001)" once Resolve gave it
// an account, and for a Dynamic handler, which has none until an event's
// user names it, its run_as as written: `"%n" (per user, on demand, uid
// at least 1000)`. A handler without an account (Resolve failed for it,
// or has not run) is "(unresolved)".
func (h *Handler) AccountSummary() string {
	switch {
	case h.Dynamic && h.Account.Name == "":
		return fmt.Sprintf("%q (per user, on demand, uid at least %d)", h.RunAs, h.MinUID)
	case h.Account.Name != "":
		return fmt.Sprintf("%s (uid %d, gid %d)", h.Account.Name, h.Account.UID, h.Account.GID)
	}
	return "(unresolved)"
}
