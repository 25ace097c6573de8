// Command loadcmd is the command of TestLoadWithoutLoss's slow handlers:
// it records one run of a handler as two lines appended to DIR/$IMSE_USER,
//
//	S FORK PID TRIGGER UID
//	E FORK PID OVERLAP
//
// one as it starts and one as it ends, $HOLD (a Go duration) later. FORK
// is when the exec process forked it, in clock ticks since boot (field
// 22 of /proc/self/stat): close to when the daemon decided to run it.
// UID is $IMSE_UID, or - when there is none. OVERLAP is 1 when another
// run for the same user held the file's lock as this one started: two
// copies of the handler running at once. The lock is held from before
// the S line until the process exits. The fast handlers' command is a
// shell line writing the same lines with builtins only (see
// loadFastCommand).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: loadcmd DIR")
		os.Exit(2)
	}
	f, err := os.OpenFile(filepath.Join(os.Args[1], os.Getenv("IMSE_USER")), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fail(err)
	}
	overlap := 0
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		overlap = 1
	}
	fork, pid := forkTicks(), os.Getpid()
	uid := os.Getenv("IMSE_UID")
	if uid == "" {
		uid = "-"
	}
	// One write a line: O_APPEND keeps the lines of concurrent writers
	// whole.
	if _, err := fmt.Fprintf(f, "S %s %d %s %s\n", fork, pid, os.Getenv("IMSE_TRIGGER"), uid); err != nil {
		fail(err)
	}
	if d, err := time.ParseDuration(os.Getenv("HOLD")); err == nil && d > 0 {
		time.Sleep(d)
	}
	if _, err := fmt.Fprintf(f, "E %s %d %d\n", fork, pid, overlap); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "loadcmd:", err)
	os.Exit(1)
}

// forkTicks returns field 22 of /proc/self/stat, the start time.
func forkTicks() string {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		fail(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		fail(fmt.Errorf("/proc/self/stat: %q", s))
	}
	return f[19]
}
