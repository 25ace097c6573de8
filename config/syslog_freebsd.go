package config

// DefaultSyslogSocket is where FreeBSD's syslogd listens for local
// messages.
const DefaultSyslogSocket = "/var/run/log"
