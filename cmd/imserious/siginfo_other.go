//go:build !(darwin || dragonfly || freebsd || netbsd || openbsd)

package main

import "syscall"

// statusSignal makes the daemon write its status into the log: SIGUSR1
// where there is no SIGINFO.
var statusSignal = syscall.SIGUSR1
