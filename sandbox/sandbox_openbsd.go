package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Promises, and why each is there.
const (
	// The network process serves on sockets it holds and receives more
	// over its channel (exec channels and a new listener arrive after
	// serving starts). It creates none, so no "unix"; its channels are
	// connected socketpairs, which stdio covers.
	netPromises = "stdio inet recvfd"
	// An exec process forks and executes commands (proc exec; proc also
	// covers the session and the file limit os/exec sets in the child,
	// and killing the command's group), reads what the kernel reads to
	// start them and stats the home (rpath), and receives channels from
	// network processes (recvfd). Its credentials never change after the
	// drop, so no "id".
	execPromises = "stdio rpath proc exec recvfd"
	// The parent at reload: reads the configuration, accounts and TLS
	// files (rpath), creates and fixes the chroot directory (cpath fattr
	// chown), binds the listener (inet; dns lookups go over inet too),
	// starts, signals and reaps children (proc exec), hands them
	// descriptors (sendfd, and recvfd so that a child sending one cannot
	// get the parent killed), and asks whether its output is a terminal
	// before handing it down (tty: privsep uses TIOCGETA).
	parentPromises = "stdio rpath cpath fattr chown tty inet proc exec sendfd recvfd"
)

// ldSo is the ELF interpreter of dynamically linked programs. The kernel
// loads it while still in the calling process, so under unveil it must be
// readable (exec_elf.c: ni_unveil = UNVEIL_READ, ni_pledge = PLEDGE_RPATH).
const ldSo = "/usr/libexec/ld.so"

// maxUnveilFiles bounds the commands unveiled one by one; beyond it their
// directories are unveiled instead, well below the kernel's limit of 128
// unveiled names per process.
const maxUnveilFiles = 64

// netOS confines the network process: it sees no file at all and may only
// use the sockets it has and receives. Call it once serving needs nothing
// more from the system: after the chroot and the drop, after the listener
// and exec channels are open, before serving.
func netOS(r *Report) error {
	if err := hideAll(); err != nil {
		return fmt.Errorf("sandbox: net: %w", err)
	}
	r.applied("unveil: no filesystem")
	if err := unix.PledgePromises(netPromises); err != nil {
		return fmt.Errorf("sandbox: net: pledge %q: %w", netPromises, err)
	}
	r.applied("pledge: %s", netPromises)
	notDumpable(r)
	return nil
}

// execOS confines an exec process after its drop (and after its chdir to
// "/", which is not unveiled). commands are the absolute program paths it
// may run, home the account's home (the working directory of commands).
//
// The commands' execpromises are left unset, so each command starts
// unconfined by pledge and unveil, as the account. Unveil cannot be
// widened later: a reload that adds a command needs a new exec process.
// A missing home makes commands start in "/", which is not visible: they
// then fail to start, and Missing says so. /etc/passwd is not unveiled:
// the process gets its account resolved and never looks one up.
func execOS(r *Report, commands []string, home string) error {
	paths, notFound := execPaths(commands)
	for _, c := range notFound {
		r.missing("unveil: command %s not found, it cannot start", c)
	}
	for _, p := range paths {
		if err := unveil(p, "x"); err != nil {
			return fmt.Errorf("sandbox: exec: %w", err)
		}
	}
	for _, p := range []string{ldSo, "/dev/null"} {
		if err := unveil(p, "r"); err != nil {
			return fmt.Errorf("sandbox: exec: %w", err)
		}
	}
	what := fmt.Sprintf("unveil: %d command paths (x), %s and /dev/null (r)", len(paths), ldSo)
	if home != "" {
		// Commands start in the home when it is a directory (exec's
		// workDir), and in "/" otherwise.
		home = filepath.Clean(home)
		if fi, err := os.Stat(home); err != nil || !fi.IsDir() {
			r.missing("unveil: home %s is not a directory; commands would start in /, which is not visible", home)
		} else if err := unveil(home, "r"); err != nil {
			return fmt.Errorf("sandbox: exec: %w", err)
		} else {
			what += ", " + home + " (r)"
		}
	}
	if err := unix.UnveilBlock(); err != nil {
		return fmt.Errorf("sandbox: exec: unveil: lock: %w", err)
	}
	r.applied("%s", what)
	if err := unix.PledgePromises(execPromises); err != nil {
		return fmt.Errorf("sandbox: exec: pledge %q: %w", execPromises, err)
	}
	r.applied("pledge: %s", execPromises)
	notDumpable(r)
	return nil
}

// parentOS confines the parent as far as reload allows: a pledge, no unveil,
// since a reload reads whatever paths the new configuration names.
func parentOS(r *Report) error {
	if err := unix.PledgePromises(parentPromises); err != nil {
		return fmt.Errorf("sandbox: parent: pledge %q: %w", parentPromises, err)
	}
	r.applied("pledge: %s", parentPromises)
	r.missing("unveil: not applied, reload reads whatever paths the new configuration names")
	return nil
}

// hideAll makes the whole filesystem invisible and locks unveil.
func hideAll() error {
	if err := unveil("/", ""); err != nil {
		return err
	}
	if err := unix.UnveilBlock(); err != nil {
		return fmt.Errorf("unveil: lock: %w", err)
	}
	return nil
}

func unveil(path, perm string) error {
	if err := unix.Unveil(path, perm); err != nil {
		return fmt.Errorf("unveil %s %q: %w", path, perm, err)
	}
	return nil
}

// execPaths returns what execve of each command looks up under unveil:
// the command, where a symbolic link leads, and the interpreter named on
// a "#!" line (the kernel finds it while still in the calling process).
// Beyond maxUnveilFiles paths it returns their directories instead.
// Commands that do not exist are returned apart.
func execPaths(commands []string) (paths, notFound []string) {
	seen := map[string]bool{}
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			paths = append(paths, p)
		}
	}
	for _, c := range commands {
		real, err := filepath.EvalSymlinks(c)
		if errors.Is(err, fs.ErrNotExist) {
			notFound = append(notFound, c)
			continue
		}
		add(filepath.Clean(c))
		if err == nil {
			add(real)
			if in := interpreter(real); in != "" {
				add(in)
				if r, err := filepath.EvalSymlinks(in); err == nil {
					add(r)
				}
			}
		}
	}
	if len(paths) > maxUnveilFiles {
		dirs := map[string]bool{}
		for _, p := range paths {
			dirs[filepath.Dir(p)] = true
		}
		paths = paths[:0]
		for d := range dirs {
			paths = append(paths, d)
		}
		slices.Sort(paths)
	}
	return paths, notFound
}

// interpreter returns the absolute interpreter of a "#!" script, or "".
func interpreter(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	rest, ok := strings.CutPrefix(line, "#!")
	if !ok {
		return ""
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 || !filepath.IsAbs(fields[0]) {
		return ""
	}
	return filepath.Clean(fields[0])
}
