//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package main

import "syscall"

// statusSignal makes the daemon write its status into the log: SIGINFO,
// the BSDs' ^T, as mswatch and dd(1) answer it.
var statusSignal = syscall.SIGINFO
