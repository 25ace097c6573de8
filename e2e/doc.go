// Package e2e is the end-to-end suite against a real Dovecot: a private
// Dovecot instance delivers mail with dovecot-lda and over LMTP, its OX
// push driver notifies the imserious binary, started as root so that
// privilege separation drops for real, and the commands it runs report
// their uid, arguments and environment.
//
// The tests are behind the build tag e2e, since they need root, Debian's
// Dovecot packages and a few system accounts they create; `make e2e`
// installs the packages when missing and runs them:
//
//	make e2e
//	go test -tags e2e -count=1 -v ./e2e/    # once Dovecot is installed
//
// The Dovecot configuration under test is the output of `imseriousctl
// dovecot 2.3` for the imserious configuration under test, pasted as is,
// and the METADATA keys are set by running the doveadm lines it prints:
// a wrong URL, encoding or setting fails the suite.
//
// IMSERIOUS_BIN and IMSERIOUSCTL_BIN name the binaries under test; without
// them the suite builds them from ./cmd/imserious and ./cmd/imseriousctl.
package e2e
