package pathwalk

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestWalk(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "archive", "cert1.pem")
	if err := os.MkdirAll(filepath.Dir(real), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(real, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "live"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "live", "cert.pem")
	if err := os.Symlink("../archive/cert1.pem", link); err != nil {
		t.Fatal(err)
	}
	var seen, links []string
	final, err := Walk(link, func(p string, fi fs.FileInfo) error {
		seen = append(seen, p)
		if fi.Mode()&fs.ModeSymlink != 0 {
			links = append(links, p)
		}
		return nil
	})
	if err != nil || final != real {
		t.Fatalf("Walk = %q, %v; want %q", final, err, real)
	}
	if !slices.Equal(links, []string{link}) || seen[0] != "/" || seen[len(seen)-1] != real {
		t.Errorf("links %q, seen %q", links, seen)
	}

	loop := filepath.Join(dir, "loop")
	if err := os.Symlink("loop", loop); err != nil {
		t.Fatal(err)
	}
	var we *Error
	if _, err := Walk(loop, func(string, fs.FileInfo) error { return nil }); !errors.As(err, &we) || !we.Links {
		t.Errorf("a loop: %v", err)
	}
	if p, err := Walk(filepath.Join(dir, "missing", "x"), func(string, fs.FileInfo) error { return nil }); !errors.Is(err, fs.ErrNotExist) || p != filepath.Join(dir, "missing") {
		t.Errorf("missing: %q %v", p, err)
	}
	stop := errors.New("stop")
	if _, err := Walk(real, func(p string, _ fs.FileInfo) error {
		if p == filepath.Join(dir, "archive") {
			return stop
		}
		return nil
	}); err != stop {
		t.Errorf("visit's error: %v", err)
	}
	if _, err := Walk("relative", nil); err == nil {
		t.Error("a relative path walked")
	}
}
