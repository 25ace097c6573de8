package main

import "syscall"

// sinkAttr puts the sink in a session of its own, as imserious starts
// each of its children: on Linux that is also a scheduler autogroup of
// its own, which changes how the cores are shared between the
// processes, so the floor must have it too. Pdeathsig ends the sink with
// the server however the server ends, as imserious's children end with
// their parent.
func sinkAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
}
