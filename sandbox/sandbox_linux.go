package sandbox

import (
	"errors"
	"fmt"

	"github.com/imserious/imserious/privsep"
	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/psx"
)

// netOS confines the network process. Call it once serving needs nothing more
// from the system: after the chroot and the drop, after the listener and
// exec channels are open, before serving. It must leave working: accept on
// the inherited listener, read/write on already open sockets and pipes,
// TLS, time (the zone was loaded before), goroutines, and the descriptors
// it already has (and those received later over them).
//
// Security-sensitive and ordering-dependent: no_new_privs first (Landlock
// and seccomp need it, and it must cover every thread), then not dumpable,
// then Landlock with no rule at all (no filesystem, no TCP, no signals or
// abstract sockets outside the process, as far as the kernel's ABI goes),
// checked by trying what it forbids; the seccomp allow-list last, since it
// forbids the system calls the steps before use.
func netOS(r *Report) error {
	if err := noNewPrivs(); err != nil {
		return fmt.Errorf("sandbox: net: %w", err)
	}
	r.applied("no_new_privs")
	if err := privsep.SetNotDumpable(); err != nil {
		return fmt.Errorf("sandbox: net: %w", err)
	}
	r.applied("not dumpable")
	// The filter forbids new sockets: Landlock's gaps there (UDP before
	// ABI v10, multipath TCP at any version) are then not the process's.
	filtered := hasNetFilter()
	if err := landlockNet(r, filtered); err != nil {
		return fmt.Errorf("sandbox: net: %w", err)
	}
	if err := seccompNet(r); err != nil {
		return fmt.Errorf("sandbox: net: %w", err)
	}
	return nil
}

// execOS confines an exec process after its drop. commands are the absolute
// program paths it may run, home the account's home (the working directory
// of commands).
//
// On Linux only the flag that keeps other processes of the account from
// reading this one's memory: commands must be able to start setuid
// helpers such as sendmail (so no no_new_privs, which every command would
// inherit), and to use the account's files and any system call (so no
// Landlock or seccomp, whose domains are inherited too).
func execOS(r *Report, commands []string, home string) error {
	if err := privsep.SetNotDumpable(); err != nil {
		return fmt.Errorf("sandbox: exec: %w", err)
	}
	r.applied("not dumpable")
	nnp, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("sandbox: exec: prctl PR_GET_NO_NEW_PRIVS: %w", err)
	}
	if nnp != 0 {
		// Not an error: whoever started the daemon chose it (systemd's
		// NoNewPrivileges=, say), but setuid helpers will not work.
		r.missing("setuid helpers: no_new_privs was set by whatever started the daemon, so sendmail and other setuid programs run without their privileges")
	} else {
		r.missing("no_new_privs: not set, commands may start setuid helpers such as sendmail")
	}
	r.missing("landlock, seccomp: not applied, commands inherit them and need the account's files and any system call")
	return nil
}

// parentOS confines the parent as far as reload allows. On Linux that is
// only not dumpable, so that no core file keeps the TLS keys it reads:
// reload reads any path the new configuration names, binds any address
// and starts children as root, and no_new_privs would reach the exec
// processes and break setuid helpers.
func parentOS(r *Report) error {
	if err := privsep.SetNotDumpable(); err != nil {
		return fmt.Errorf("sandbox: parent: %w", err)
	}
	r.applied("not dumpable")
	r.missing("no_new_privs: not set, exec processes inherit it and must start setuid helpers")
	r.missing("landlock, seccomp: not applied, reload reads any configured path, binds any address and starts children as root")
	return nil
}

// noNewPrivs sets no_new_privs on every thread of the process.
//
// Security-sensitive: the flag is per thread, the Go runtime already runs
// several, and a thread without it could execve a setuid program (and
// Landlock before ABI v8 refuses a thread without it). psx runs the prctl
// on every thread: with CGO_ENABLED=0, as the daemon is built, it is
// syscall.AllThreadsSyscall6; with cgo (go test -race), where
// AllThreadsSyscall fails with ENOTSUP, it is libpsx, the mechanism
// go-landlock uses itself. Threads started later inherit the flag.
func noNewPrivs() error {
	if _, _, errno := psx.Syscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); errno != 0 {
		return fmt.Errorf("prctl PR_SET_NO_NEW_PRIVS on all threads: %w", errno)
	}
	// Assert on this thread; the tests check every thread from outside.
	v, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("prctl PR_GET_NO_NEW_PRIVS: %w", err)
	}
	if v != 1 {
		return fmt.Errorf("no_new_privs is %d after PR_SET_NO_NEW_PRIVS", v)
	}
	return nil
}

// landlockABI is the Landlock ABI version go-landlock applies on this
// kernel, 0 without Landlock, and why when 0. It mirrors go-landlock's
// own choice (landlock/internal/abi.go, which is not importable): the
// kernel's version, capped at the newest the library knows (V11), and
// version 6 and later downgraded to 5 when the kernel lacks the erratum 2
// fix of signal scoping.
func landlockABI() (int, string) {
	v, err := ll.LandlockGetABIVersion()
	switch {
	case errors.Is(err, unix.ENOSYS):
		return 0, "not built into this kernel"
	case errors.Is(err, unix.EOPNOTSUPP):
		return 0, "built in but not enabled at boot (lsm= or CONFIG_LSM)"
	case err != nil:
		return 0, fmt.Sprintf("cannot ask the kernel: %v", err)
	case v < 1:
		return 0, fmt.Sprintf("the kernel reports ABI %d", v)
	}
	if v > 11 {
		v = 11
	}
	if v >= 6 {
		if e, err := ll.LandlockGetErrata(); err != nil || e&0x2 == 0 {
			v = 5
		}
	}
	return v, ""
}

// landlockNet restricts the process to nothing Landlock governs. With
// noSockets, another layer forbids creating sockets, and Landlock's gaps
// there are not reported.
func landlockNet(r *Report, noSockets bool) error {
	abi, why := landlockABI()
	if abi == 0 {
		r.missing("landlock: %s", why)
		return nil
	}
	// No rule: every access right the ABI handles is denied. BestEffort
	// keeps to what the kernel has; landlockABI says what that is.
	if err := landlock.V11.BestEffort().Restrict(); err != nil {
		return fmt.Errorf("landlock v%d: %w", abi, err)
	}
	// Security: assert rather than trust; each check tries what the
	// ruleset must forbid.
	fd, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
		return fmt.Errorf("landlock v%d: / can still be opened", abi)
	}
	if !errors.Is(err, unix.EACCES) {
		return fmt.Errorf("landlock v%d: opening / failed with %w, want EACCES", abi, err)
	}
	what := "no filesystem"
	if abi >= 4 {
		if err := checkNoTCPBind(); err != nil {
			return fmt.Errorf("landlock v%d: %w", abi, err)
		}
		what += ", no tcp bind/connect"
		if !noSockets {
			// Landlock's TCP rules leave out IPPROTO_MPTCP sockets
			// (landlock-lsm/linux#54); checked on this kernel in the tests.
			r.missing("landlock v%d: multipath tcp sockets not restricted (kernel limitation)", abi)
		}
	} else {
		r.missing("landlock v%d: tcp bind/connect not restricted (ABI v4)", abi)
	}
	if abi >= 6 {
		what += ", no signals or abstract unix sockets beyond this process"
	} else {
		r.missing("landlock v%d: signals and abstract unix sockets not scoped (ABI v6)", abi)
	}
	if abi >= 10 {
		what += ", no udp"
	} else if !noSockets {
		r.missing("landlock v%d: udp not restricted (ABI v10)", abi)
	}
	r.applied("landlock v%d: %s", abi, what)
	return nil
}

// checkNoTCPBind fails unless binding a TCP socket is refused as Landlock
// refuses it. Binding port 0 on loopback needs nothing from the network,
// and Landlock decides before the address is even checked.
func checkNoTCPBind() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cannot check tcp bind: socket: %w", err)
	}
	defer unix.Close(fd)
	err = unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	if err == nil {
		return errors.New("a tcp socket can still be bound")
	}
	if !errors.Is(err, unix.EACCES) {
		return fmt.Errorf("binding a tcp socket failed with %w, want EACCES", err)
	}
	return nil
}
