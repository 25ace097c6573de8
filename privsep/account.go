package privsep

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
)

// Account is a system account as the exec and network processes need it:
// the ids to drop to and the values of the command environment.
type Account struct {
	Name   string `json:"name"`
	UID    int    `json:"uid"`
	GID    int    `json:"gid"`
	Groups []int  `json:"groups"` // supplementary groups, primary gid first
	Home   string `json:"home"`
	Shell  string `json:"shell"`
}

// ErrNoAccount is wrapped by LookupAccount when the name is not in the
// password database.
var ErrNoAccount = errors.New("no such account")

// passwdFile is a variable so tests can point it elsewhere.
var passwdFile = "/etc/passwd"

// LookupAccount reads the account from /etc/passwd (the shell is not
// available through os/user without cgo) and its groups through os/user,
// which reads /etc/group itself when built with CGO_ENABLED=0.
func LookupAccount(name string) (Account, error) {
	if name == "" || strings.ContainsAny(name, ":\n\x00") {
		return Account{}, fmt.Errorf("account %q: %w", name, ErrNoAccount)
	}
	f, err := os.Open(passwdFile)
	if err != nil {
		return Account{}, fmt.Errorf("account %q: %w", name, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 7 || fields[0] != name {
			continue
		}
		uid, err1 := strconv.Atoi(fields[2])
		gid, err2 := strconv.Atoi(fields[3])
		if err1 != nil || err2 != nil || uid < 0 || gid < 0 {
			return Account{}, fmt.Errorf("account %q: malformed entry in %s", name, passwdFile)
		}
		a := Account{Name: name, UID: uid, GID: gid, Home: fields[5], Shell: fields[6]}
		a.Groups, err = groupsOf(name, gid)
		if err != nil {
			return Account{}, fmt.Errorf("account %q: groups: %w", name, err)
		}
		return a, nil
	}
	if err := sc.Err(); err != nil {
		return Account{}, fmt.Errorf("account %q: %w", name, err)
	}
	return Account{}, fmt.Errorf("account %q: %w", name, ErrNoAccount)
}

// groupsOf returns the primary gid followed by every supplementary group,
// without duplicates. FreeBSD takes getgroups()[0] as the egid, so the
// primary group comes first everywhere.
func groupsOf(name string, gid int) ([]int, error) {
	groups := []int{gid}
	u := &user.User{Username: name, Gid: strconv.Itoa(gid)}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, err
	}
	for _, s := range ids {
		g, err := strconv.Atoi(s)
		if err != nil {
			continue
		}
		dup := false
		for _, have := range groups {
			if have == g {
				dup = true
				break
			}
		}
		if !dup {
			groups = append(groups, g)
		}
	}
	return groups, nil
}

// Current returns the account of the invoking user (by real uid).
func Current() (Account, error) {
	uid := os.Getuid()
	f, err := os.Open(passwdFile)
	if err != nil {
		return Account{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 7 && fields[2] == strconv.Itoa(uid) {
			return LookupAccount(fields[0])
		}
	}
	return Account{}, fmt.Errorf("uid %d: %w", uid, ErrNoAccount)
}
