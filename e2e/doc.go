// Package e2e is the end-to-end suite against a real Dovecot: a private
// Dovecot instance delivers mail with dovecot-lda and over LMTP, its OX
// push driver notifies the imserious binary, started as root so that
// privilege separation drops for real, and the commands it runs report
// their uid, arguments and environment.
//
// Every case runs against each Dovecot under test (release_test.go), as
// subtests named dovecot2.3 and dovecot2.4:
//
//   - 2.3: the host's Dovecot 2.3.19, Debian 12's packages, which `make
//     e2e` installs (install-dovecot.sh);
//   - 2.4: Debian 13's Dovecot 2.4.1, in a Debian 13 chroot that shares
//     the host's network, so that its dovecot-lda and LMTP reach
//     imserious on loopback. The first test that needs it runs
//     install-dovecot24.sh, which makes the chroot with debootstrap from
//     Debian's packages when it is missing (about 40 s) and leaves one
//     that is there alone; it is kept at /var/cache/imserious-e2e/trixie,
//     or $IMSERIOUS_E2E_CHROOT. The mail users are the host's accounts,
//     copied into the chroot with the same uids, so the commands run as
//     the very accounts the mail belongs to.
//
// The tests are behind the build tag e2e, since they need root, Debian's
// Dovecot packages, network access to Debian's mirrors once (for the
// chroot) and a few system accounts they create; `make e2e` installs the
// packages when missing and runs them:
//
//	make e2e
//	go test -tags e2e -count=1 -v ./e2e/    # once Dovecot is installed
//
// $IMSERIOUS_E2E_DOVECOT selects the Dovecots under test: "2.3 2.4" when
// unset, "2.3" where the chroot cannot be made. A Dovecot that is
// selected and missing fails the suite: it is never skipped.
//
// The Dovecot configuration under test is the output of `imseriousctl
// dovecot 2.3` or `imseriousctl dovecot 2.4` for the imserious
// configuration under test, pasted as is, and the METADATA keys are set
// by running the doveadm lines it prints: a wrong URL, encoding or
// setting fails the suite.
//
// IMSERIOUS_BIN and IMSERIOUSCTL_BIN name the binaries under test; without
// them the suite builds them from ./cmd/imserious and ./cmd/imseriousctl.
// Build them as `make build` does, with CGO_ENABLED=0.
package e2e
