// Package daemontest runs the imserious binary for end-to-end tests, as
// production starts it: it builds or locates the binary, starts it on a
// configuration with an explicit environment, reads its JSON log as it
// comes, inspects the processes it forks, and stops all of them when the
// test ends. The tests of cmd/imserious and the Dovecot suite in e2e share
// it.
//
// It is Linux-only (its files carry the suffix): the process tree is read
// from /proc, the daemon is tied to the test binary with Pdeathsig, and
// accounts are made with useradd.
package daemontest
