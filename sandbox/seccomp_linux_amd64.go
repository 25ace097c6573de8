package sandbox

import "golang.org/x/sys/unix"

// netAllowed lists the system calls the network process may make without
// condition once confined. Found with strace on the tests' child, which
// serves TLS on the inherited listener, receives a descriptor over its
// channel and starts threads, built both with CGO_ENABLED=0 (as the
// daemon is) and with -race (cgo, libpsx, glibc); a few more that serving
// may make are marked.
var netAllowed = []uintptr{
	// Threads, signals, time, randomness: the Go runtime.
	unix.SYS_MUNMAP,
	unix.SYS_MADVISE,
	unix.SYS_FUTEX,
	unix.SYS_SCHED_YIELD,
	unix.SYS_NANOSLEEP,
	unix.SYS_CLOCK_GETTIME, // the vDSO's fallback
	unix.SYS_GETTID,
	unix.SYS_GETPID,
	unix.SYS_TGKILL, // preemption, and dying of a signal
	unix.SYS_RT_SIGACTION,
	unix.SYS_RT_SIGPROCMASK,
	unix.SYS_RT_SIGRETURN,
	unix.SYS_SIGALTSTACK,
	unix.SYS_RESTART_SYSCALL,
	unix.SYS_EXIT,
	unix.SYS_EXIT_GROUP,
	unix.SYS_GETRANDOM,
	// sysmon's update of GOMAXPROCS, once a second: the CPUs it may run
	// on, and the cgroup's cpu.max, held open since start. Refused, the
	// runtime would take one CPU and set GOMAXPROCS to 1.
	unix.SYS_SCHED_GETAFFINITY,
	unix.SYS_PREAD64,
	// glibc's thread start, in cgo builds (go test -race): it aborts the
	// process when rseq registration fails with anything but ENOSYS.
	unix.SYS_RSEQ,
	unix.SYS_SET_ROBUST_LIST,
	// The poller and the descriptors already open.
	unix.SYS_EPOLL_PWAIT,
	unix.SYS_EPOLL_CTL,
	unix.SYS_READ,
	unix.SYS_WRITE,
	unix.SYS_READV,  // not seen; net.Buffers
	unix.SYS_WRITEV, // not seen; net.Buffers, glibc's messages
	unix.SYS_CLOSE,
	unix.SYS_FCNTL,
	// Sockets already open or received: accept and talk, never create,
	// bind or connect.
	unix.SYS_ACCEPT4,
	unix.SYS_RECVMSG,
	unix.SYS_SENDMSG, // privsep's channels
	unix.SYS_SETSOCKOPT,
	unix.SYS_GETSOCKOPT,
	unix.SYS_GETSOCKNAME,
	unix.SYS_GETPEERNAME,
	unix.SYS_SHUTDOWN, // not seen; net/http closing a connection
}

// netFilter assembles, for x86-64:
//
//	    ld  arch;  jne AUDIT_ARCH_X86_64 -> kill
//	    ld  nr;    jeq each of netAllowed -> allow
//	    jeq mmap or mprotect -> prot
//	    jne clone -> notclone
//	    ld  arg0;  jset CLONE_THREAD ? next : deny;  jset nsFlags ? deny : allow
//	prot:
//	    ld  arg2;  jset PROT_EXEC ? deny : allow
//	notclone:
//	    jeq clone3 -> enosys, else deny
//	deny: EPERM;  enosys: ENOSYS;  allow: ALLOW;  kill: KILL_PROCESS
//
// It returns the program and the number of system calls it allows.
func netFilter() ([]unix.SockFilter, int, error) {
	var a asm
	a.ld(dataArch)
	a.jeq(unix.AUDIT_ARCH_X86_64, "", "kill")
	// x32 calls share the architecture; their numbers carry bit 30
	// (__X32_SYSCALL_BIT) and match no entry below.
	a.ld(dataNr)
	for _, nr := range netAllowed {
		a.jeq(uint32(nr), "allow", "")
	}
	a.jeq(unix.SYS_MMAP, "prot", "")
	a.jeq(unix.SYS_MPROTECT, "prot", "")
	a.jeq(unix.SYS_CLONE, "", "notclone")
	a.ld(dataArgLow(0))
	a.jset(unix.CLONE_THREAD, "", "deny")
	a.jset(nsFlags, "deny", "allow")
	a.label("prot")
	a.ld(dataArgLow(2))
	a.jset(unix.PROT_EXEC, "deny", "allow")
	a.label("notclone")
	a.jeq(unix.SYS_CLONE3, "enosys", "deny")
	a.label("deny")
	a.ret(unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM))
	a.label("enosys")
	a.ret(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS))
	a.label("allow")
	a.ret(unix.SECCOMP_RET_ALLOW)
	a.label("kill")
	a.ret(unix.SECCOMP_RET_KILL_PROCESS)
	prog, err := a.assemble()
	return prog, len(netAllowed) + 3, err
}
