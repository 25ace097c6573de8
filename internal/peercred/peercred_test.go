package peercred

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestUIDOfPeer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	uid, err := UID(s)
	if err != nil || uid != os.Geteuid() {
		t.Errorf("UID = %d, %v; want %d", uid, err, os.Geteuid())
	}
}
