package daemontest

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Stat is what /proc/PID/stat says about a process's place in the job
// control of the system.
type Stat struct {
	Pid     int
	Comm    string // field 2, without the parentheses
	State   string // field 3: R, S, Z, ...
	PPid    int    // field 4
	Pgrp    int    // field 5
	Session int    // field 6
	TTYNr   int    // field 7: the controlling terminal, 0 for none
	Start   string // field 22: with the pid, names the process uniquely
}

// ReadStat reads /proc/PID/stat; false when there is no such process.
func ReadStat(pid int) (Stat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, false
	}
	return ParseStat(string(b))
}

// ParseStat parses the text of a /proc/PID/stat file, as a process that
// printed its own prints it.
func ParseStat(s string) (Stat, bool) {
	// The command name is in parentheses and may contain anything.
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return Stat{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(s[:open]))
	if err != nil {
		return Stat{}, false
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 20 {
		return Stat{}, false
	}
	st := Stat{Pid: pid, Comm: s[open+1 : end], State: f[0], Start: f[19]}
	for i, p := range []*int{&st.PPid, &st.Pgrp, &st.Session, &st.TTYNr} {
		if *p, err = strconv.Atoi(f[i+1]); err != nil {
			return Stat{}, false
		}
	}
	return st, true
}

// FD is one open descriptor of a process.
type FD struct {
	Num    int
	Target string // what /proc/PID/fd/NUM links to
	Char   bool   // a character device
	Rdev   uint64 // its device number, when Char
}

// FDs lists the open descriptors of process pid, following each link to
// tell character devices (terminals) apart. Reading another uid's
// descriptors needs root, or the same uid and a dumpable process.
func FDs(pid int) ([]FD, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []FD
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p := dir + "/" + e.Name()
		target, err := os.Readlink(p)
		if err != nil {
			continue // closed since the listing
		}
		fd := FD{Num: n, Target: target}
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR {
			fd.Char, fd.Rdev = true, st.Rdev
		}
		out = append(out, fd)
	}
	return out, nil
}

// IsTerminal says whether a descriptor is on a terminal device: a
// pseudo-terminal's slave or master (majors 136-143, /dev/ptmx), /dev/tty,
// /dev/console or a virtual console (majors 4 and 5).
func (fd FD) IsTerminal() bool {
	if !fd.Char {
		return strings.HasPrefix(fd.Target, "/dev/pts/") || strings.HasPrefix(fd.Target, "/dev/tty")
	}
	major := unix.Major(fd.Rdev)
	return major == 4 || major == 5 || (major >= 136 && major <= 143)
}

// Status returns the value of a key of /proc/PID/status ("VmRSS",
// "Threads"), as its first number; false when there is none.
func Status(pid int, key string) (int, bool) {
	return procKey(fmt.Sprintf("/proc/%d/status", pid), key)
}

// PSS returns the proportional set size of process pid in KiB, from
// /proc/PID/smaps_rollup: its resident pages, each page shared with other
// processes counted for its share. The daemon's processes run one binary,
// whose pages are resident once whatever VmRSS says of each, so the sum
// of their PSS is the memory they take together.
func PSS(pid int) (int, bool) {
	return procKey(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss")
}

// procKey returns the first number after "key:" in a /proc file of
// "key: value" lines.
func procKey(path, key string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if k != key {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			return 0, false
		}
		n, err := strconv.Atoi(f[0])
		return n, err == nil
	}
	return 0, false
}

// FDCount returns how many descriptors process pid has open.
func FDCount(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}
