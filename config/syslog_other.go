//go:build !freebsd

package config

// DefaultSyslogSocket is where syslogd listens for local messages: /dev/log
// on Linux (journald or a syslog daemon) and on OpenBSD.
const DefaultSyslogSocket = "/dev/log"
