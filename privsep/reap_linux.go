package privsep

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BecomeSubreaper makes this process the reaper of its orphaned
// descendants (PR_SET_CHILD_SUBREAPER): a process that a command left
// behind is re-parented to it, not to init, when its parents die, so
// Children finds it.
//
// Security: it reads the setting back and fails unless it took effect.
func BecomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("privsep: prctl PR_SET_CHILD_SUBREAPER: %w", err)
	}
	var on int32
	if err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&on)), 0, 0, 0); err != nil {
		return fmt.Errorf("privsep: prctl PR_GET_CHILD_SUBREAPER: %w", err)
	}
	if on == 0 {
		return errors.New("privsep: subreaper setting did not take effect")
	}
	return nil
}

// Children returns the pids of this process's children, zombies
// included, from /proc/self/task/*/children; on kernels without that file
// (CONFIG_PROC_CHILDREN) it scans /proc/*/stat for our pid as parent.
func Children() ([]int, error) {
	pids, err := taskChildren()
	if err == nil {
		return pids, nil
	}
	pids, err2 := statChildren("/proc", os.Getpid())
	if err2 != nil {
		return nil, fmt.Errorf("privsep: children: %w", errors.Join(err, err2))
	}
	return pids, nil
}

// taskChildren reads the children file of every thread: a child belongs
// to the thread that forked it, and an orphan is re-parented to any live
// thread. A thread that exits hands its children to another, perhaps one
// already read, so the list of threads is read again afterwards and the
// whole read repeated if it changed.
func taskChildren() ([]int, error) {
	const tries = 3
	for range tries {
		before, err := threads()
		if err != nil {
			return nil, err
		}
		var pids []int
		for _, tid := range before {
			b, err := os.ReadFile("/proc/self/task/" + tid + "/children")
			if errors.Is(err, os.ErrNotExist) {
				if _, serr := os.Stat("/proc/self/task/" + tid); serr == nil {
					return nil, err // the kernel has no children file
				}
				continue // the thread is gone; the check below retries
			}
			if err != nil {
				return nil, err
			}
			for _, f := range strings.Fields(string(b)) {
				pid, err := strconv.Atoi(f)
				if err != nil {
					return nil, fmt.Errorf("/proc/self/task/%s/children: %q: %w", tid, f, err)
				}
				pids = append(pids, pid)
			}
		}
		after, err := threads()
		if err != nil {
			return nil, err
		}
		if slices.Equal(before, after) {
			slices.Sort(pids)
			return slices.Compact(pids), nil
		}
	}
	return nil, fmt.Errorf("/proc/self/task: threads kept changing over %d reads", tries)
}

func threads() ([]string, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	tids := make([]string, 0, len(ents))
	for _, e := range ents {
		tids = append(tids, e.Name())
	}
	return tids, nil // ReadDir sorts by name
}

// statChildren scans every process under proc for parent ppid: the slow
// way, for kernels without the children file.
func statChildren(proc string, ppid int) ([]int, error) {
	ents, err := os.ReadDir(proc)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		b, err := os.ReadFile(proc + "/" + e.Name() + "/stat")
		if err != nil {
			continue // exited and reaped since ReadDir
		}
		st, err := parseStat(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s/%d/stat: %w", proc, pid, err)
		}
		if st.ppid == ppid {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// procStat is what Children needs of /proc/PID/stat, and what the tests
// check about commands.
type procStat struct {
	state           byte
	ppid, pgrp, sid int
	ttyNr           int
}

// parseStat reads the fields after the command name, which is in
// parentheses and may itself contain spaces and parentheses: the last ')'
// ends it.
func parseStat(s string) (procStat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, errors.New("no command name")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 5 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("malformed stat %q", s)
	}
	var st procStat
	st.state = f[0][0]
	for i, p := range []*int{&st.ppid, &st.pgrp, &st.sid, &st.ttyNr} {
		n, err := strconv.Atoi(f[i+1])
		if err != nil {
			return procStat{}, fmt.Errorf("malformed stat field %q: %w", f[i+1], err)
		}
		*p = n
	}
	return st, nil
}
