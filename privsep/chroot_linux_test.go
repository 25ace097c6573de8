package privsep

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestChrootSwapRace is the attack from the issue: the chroot's name is
// swapped, as fast as the kernel allows, between the real directory and
// a symbolic link to "/", while the parent opens the chroot and children
// enter it. OpenChroot sees either the directory or the link (and
// refuses the link); whichever it opened, the child must end up in the
// directory, never in the real "/". Entering by name after a check by
// name (the old Drop) loses this race within a few attempts.
//
// The parent of the name is root-only, as the checks demand: the swapper
// here stands for a race between the check and the chroot, which no
// ownership rule closes, only the descriptor does.
func TestChrootSwapRace(t *testing.T) {
	requireRoot(t)
	a := Account{Name: "x", UID: 61234, GID: 61234}
	base := rootOnlyBase(t)
	name := filepath.Join(base, "empty")
	other := filepath.Join(base, "other")
	mkdir(0o755, 0)(t, name)
	symlink(t, "/", other)
	// Before base's RemoveAll (cleanups run last first), though
	// RemoveAll would not follow it either.
	t.Cleanup(func() { os.Remove(other); os.Remove(name) })
	var dirSt, realRoot unix.Stat_t
	if err := unix.Lstat(name, &dirSt); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat("/", &realRoot); err != nil {
		t.Fatal(err)
	}

	var swaps atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Atomic: the name always exists, as one or the other.
			if err := unix.Renameat2(unix.AT_FDCWD, name, unix.AT_FDCWD, other, unix.RENAME_EXCHANGE); err != nil {
				t.Errorf("renameat2 RENAME_EXCHANGE: %v", err)
				return
			}
			swaps.Add(1)
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	var attempts, refused, entered, escaped int
	var exits sync.WaitGroup
	defer exits.Wait()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		attempts++
		root, err := OpenChroot(name)
		if err != nil {
			if !strings.Contains(err.Error(), name+" is a symbolic link") && !strings.Contains(err.Error(), name+" was a symbolic link") {
				t.Fatalf("OpenChroot: %v, want success or a refusal of the symbolic link", err)
			}
			refused++
			continue
		}
		ch, out, rep := runDrop(t, dropRequest{Account: a, ByFD: true}, root)
		root.Close()
		if rep.Err != "" {
			t.Fatalf("attempt %d: DropInto: %s; child output:\n%s", attempts, rep.Err, out)
		}
		entered++
		switch {
		case rep.RootDev == realRoot.Dev && rep.RootIno == realRoot.Ino:
			escaped++
		case rep.RootDev != dirSt.Dev || rep.RootIno != dirSt.Ino:
			t.Errorf("attempt %d: child's \"/\" is device %d inode %d, want the chroot's %d/%d", attempts, rep.RootDev, rep.RootIno, dirSt.Dev, dirSt.Ino)
		}
		// Reaped aside: a child built with -race lingers a second at exit
		// (ThreadSanitizer's atexit_sleep_ms), which would leave few
		// attempts.
		ch.Conn.Close()
		exits.Add(1)
		go func() {
			defer exits.Done()
			if err := ch.Cmd.Wait(); err != nil {
				t.Errorf("child: %v; output:\n%s", err, out)
			}
		}()
	}
	exits.Wait()
	t.Logf("%d attempts, %d swaps: %d refused by OpenChroot (it saw the symbolic link), %d children entered the chroot", attempts, swaps.Load(), refused, entered)
	if escaped > 0 {
		t.Errorf("%d of %d children were confined to the real \"/\"", escaped, entered)
	}
	// Without both outcomes the swap did not race the opens, and the
	// test proved nothing.
	if refused == 0 || entered == 0 {
		t.Errorf("no race: %d refused, %d entered; want some of each", refused, entered)
	}
}
