// Package privsep owns the plumbing of privilege separation: the framing of
// messages between processes, the SOCK_SEQPACKET channels that carry them
// (with descriptors attached), starting the child processes by re-executing
// the binary, preparing the chroot directory and dropping privileges.
//
// It knows nothing of message meanings: message types and their payloads
// belong to the packages of the processes that exchange them. Every
// receiver checks the size and strictly decodes the payload, because a
// child never trusts what a less privileged process sends; any error other
// than io.EOF on a channel ends it.
package privsep
