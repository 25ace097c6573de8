#!/bin/sh
# Installs the Dovecot packages the end-to-end suite drives, when missing,
# without leaving the distribution's own Dovecot running: the suite starts
# a private instance, and a system one would hold the standard ports and
# answer deliveries with its own configuration. Debian only; run as root.
set -eu

pkgs="dovecot-core dovecot-imapd dovecot-lmtpd"

missing=""
for p in $pkgs; do
	if [ "$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
		missing="$missing $p"
	fi
done
if [ -z "$missing" ]; then
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "install-dovecot: need root to install:$missing" >&2
	exit 1
fi
command -v apt-get >/dev/null || {
	echo "install-dovecot: no apt-get; install$missing by hand" >&2
	exit 1
}

# policy-rc.d answering 101 tells invoke-rc.d (which the packages' scripts
# call) not to start the service. Keep one the system already has;
# otherwise put ours in place for the install only.
ours=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 0755 /usr/sbin/policy-rc.d
	ours=yes
fi
cleanup() {
	if [ -n "$ours" ]; then
		rm -f /usr/sbin/policy-rc.d
	fi
}
trap cleanup EXIT

echo "install-dovecot: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing

# Belt and braces: on a system where the service started anyway (a
# policy-rc.d that allows it, a running systemd), stop and disable it.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
	systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
elif [ -x /etc/init.d/dovecot ]; then
	if [ -s /run/dovecot/master.pid ] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
		/etc/init.d/dovecot stop || true
	fi
	update-rc.d dovecot disable >/dev/null 2>&1 || true
fi
