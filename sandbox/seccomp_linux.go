package sandbox

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The network process's seccomp filter: an allow-list of the system calls
// the Go runtime and serving need once everything is open (netFilter, per
// architecture, in seccomp_linux_$GOARCH.go), assembled here as classic BPF
// by hand, since the daemon is built without cgo (no libseccomp) and the
// filter is small.
//
// Security-sensitive. What it adds to Landlock: no new socket of any kind
// (Landlock does not cover multipath TCP, and UDP only from ABI v10), no
// execve, no fork (clone only for threads, and never into a namespace;
// clone3, whose flags a filter cannot read, answers ENOSYS so that libc
// falls back to clone), no executable memory (mmap and mprotect without
// PROT_EXEC: the Go runtime maps none after start), no prctl (which could
// make the process dumpable again), no ptrace, and none of the kernel's
// larger attack surface (bpf, io_uring, keyctl, userfaultfd,
// perf_event_open, mount ...). Anything else fails with EPERM rather than
// killing the process: a path the tests missed then shows as a logged
// error in one request, not as a network process dying on every start. A
// foreign system call convention (i386 calls from an amd64 process) kills
// it.

// seccompNet installs the filter on every thread, or says it is missing.
func seccompNet(r *Report) error {
	prog, calls, err := netFilter()
	if err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	if prog == nil {
		r.missing("seccomp: no tested allow-list for linux/%s", runtime.GOARCH)
		return nil
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	// TSYNC: one filter for every thread at once (threads started later
	// inherit it). The kernel requires no_new_privs, set before. On a
	// thread it cannot synchronise, it returns that thread's id.
	tid, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("seccomp: install filter: %w", errno)
	}
	if tid != 0 {
		return fmt.Errorf("seccomp: install filter: thread %d cannot be synchronised", tid)
	}
	// Security: assert rather than trust; socket is the first thing the
	// filter forbids that Landlock would not.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_MPTCP)
	if err == nil {
		unix.Close(fd)
		return errors.New("seccomp: a socket can still be created")
	}
	if !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("seccomp: creating a socket failed with %w, want EPERM", err)
	}
	r.applied("seccomp: allow-list of %d system calls, no new sockets (so no udp or multipath tcp), no exec, no fork, no executable memory", calls)
	return nil
}

// hasNetFilter reports whether this architecture has an allow-list.
func hasNetFilter() bool {
	prog, _, _ := netFilter()
	return prog != nil
}

// Offsets in struct seccomp_data (linux/seccomp.h).
const (
	dataNr   = 0
	dataArch = 4
	dataArgs = 16 // args[6], 64 bits each
)

// dataArgLow is the offset of the low 32 bits of argument i on a
// little-endian machine, the only kind with an allow-list.
func dataArgLow(i int) uint32 { return dataArgs + 8*uint32(i) }

// nsFlags are the clone flags that would enter new namespaces. CLONE_NEWTIME
// (0x80) is not among them: for clone the low byte is the exit signal.
const nsFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

// asm is a small classic-BPF assembler: jumps name labels ("" is the next
// instruction) and assemble resolves them, refusing what BPF cannot
// encode (backward jumps, offsets over 255, more than 4096 instructions).
type asm struct {
	ins    []asmInsn
	labels map[string]int
}

type asmInsn struct {
	unix.SockFilter
	jt, jf string
}

func (a *asm) emit(code uint16, k uint32, jt, jf string) {
	a.ins = append(a.ins, asmInsn{SockFilter: unix.SockFilter{Code: code, K: k}, jt: jt, jf: jf})
}

func (a *asm) ld(off uint32) { a.emit(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, off, "", "") }
func (a *asm) ret(k uint32)  { a.emit(unix.BPF_RET|unix.BPF_K, k, "", "") }
func (a *asm) jeq(k uint32, jt, jf string) {
	a.emit(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, k, jt, jf)
}
func (a *asm) jset(k uint32, jt, jf string) {
	a.emit(unix.BPF_JMP|unix.BPF_JSET|unix.BPF_K, k, jt, jf)
}

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.ins)
}

func (a *asm) assemble() ([]unix.SockFilter, error) {
	if len(a.ins) == 0 || len(a.ins) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("filter of %d instructions", len(a.ins))
	}
	out := make([]unix.SockFilter, len(a.ins))
	for i, in := range a.ins {
		out[i] = in.SockFilter
		for _, j := range []struct {
			name string
			off  *uint8
		}{{in.jt, &out[i].Jt}, {in.jf, &out[i].Jf}} {
			if j.name == "" {
				continue
			}
			to, ok := a.labels[j.name]
			if !ok {
				return nil, fmt.Errorf("instruction %d: unknown label %q", i, j.name)
			}
			d := to - i - 1
			if d < 0 || d > 255 {
				return nil, fmt.Errorf("instruction %d: jump to %q is %d instructions away", i, j.name, d)
			}
			*j.off = uint8(d)
		}
	}
	return out, nil
}
