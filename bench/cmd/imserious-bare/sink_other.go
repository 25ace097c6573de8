//go:build !linux

package main

import "syscall"

// sinkAttr puts the sink in a session of its own, as imserious starts
// each of its children. Without Pdeathsig the sink still ends with the
// server: the server's end of the socket closes when it exits, which
// the sink reads as the end of its input.
func sinkAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true}
}
