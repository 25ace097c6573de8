#!/bin/sh
# Makes the Debian 13 (trixie) chroot whose Dovecot 2.4 the end-to-end
# suite drives, when it is missing, and leaves one that is there alone:
#
#   sh e2e/install-dovecot24.sh [DIR]
#
# DIR is $IMSERIOUS_E2E_CHROOT, else /var/cache/imserious-e2e/trixie. The
# chroot is Debian's own packages, debootstrap --variant=minbase with
# dovecot-core and dovecot-lmtpd, from $IMSERIOUS_E2E_MIRROR (default
# http://deb.debian.org/debian); debootstrap itself is installed with
# apt-get when missing. It is built beside DIR and renamed into place once
# complete, so a DIR that exists is always whole: an interrupted run
# leaves DIR.new, which the next run removes. Nothing in it is started:
# debootstrap keeps services from starting while it installs, and the
# suite starts its own Dovecot with its own configuration. Debian only;
# run as root. The suite runs this itself (see dovecot24_test.go).
set -eu

dir=${1:-${IMSERIOUS_E2E_CHROOT:-/var/cache/imserious-e2e/trixie}}
mirror=${IMSERIOUS_E2E_MIRROR:-http://deb.debian.org/debian}
suite=trixie
pkgs=dovecot-core,dovecot-lmtpd
marker=.imserious-e2e-chroot

case $dir in
/*) ;;
*)
	echo "install-dovecot24: $dir: want an absolute path" >&2
	exit 2
	;;
esac
dir=${dir%/}

ready() {
	[ -f "$dir/$marker" ] && [ -x "$dir/usr/sbin/dovecot" ]
}
if ready; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "install-dovecot24: need root to make the Dovecot 2.4 chroot $dir" >&2
	exit 1
fi

mkdir -p "$(dirname "$dir")"
# One maker at a time: a second run waits, then finds the chroot made.
exec 9>"$dir.lock"
flock 9
if ready; then
	exit 0
fi
if [ -e "$dir" ]; then
	echo "install-dovecot24: $dir exists but is not a finished chroot ($marker missing): remove it by hand" >&2
	exit 1
fi

if ! command -v debootstrap >/dev/null; then
	command -v apt-get >/dev/null || {
		echo "install-dovecot24: no debootstrap and no apt-get: install debootstrap by hand" >&2
		exit 1
	}
	export DEBIAN_FRONTEND=noninteractive
	# The package lists of a fresh machine may be empty: update only then.
	if ! apt-cache show debootstrap >/dev/null 2>&1; then
		apt-get update -q
	fi
	# The keyring too, at its newest: debootstrap checks trixie's Release
	# signature against it.
	echo "install-dovecot24: installing debootstrap"
	apt-get install -y -q --no-install-recommends debootstrap debian-archive-keyring
fi

new=$dir.new
# What an interrupted debootstrap may have left mounted under DIR.new
# (it mounts proc and sys in the target) goes before the files do.
if [ -e "$new" ]; then
	awk -v p="$new/" 'index($2 "/", p) == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r m; do umount -l "$m"; done
	rm -rf "$new"
fi

echo "install-dovecot24: debootstrap $suite into $new ($mirror), with $pkgs"
start=$(date +%s)
if ! debootstrap --variant=minbase --include="$pkgs" "$suite" "$new" "$mirror"; then
	[ -f "$new/debootstrap/debootstrap.log" ] && tail -n 30 "$new/debootstrap/debootstrap.log" >&2
	echo "install-dovecot24: debootstrap failed; $new is left for a look, the next run removes it" >&2
	exit 1
fi

# The device nodes Dovecot opens: debootstrap makes them with mknod, or
# bind-mounts them where mknod is refused (and unmounts them at its end).
for n in null:3 zero:5 urandom:9; do
	f=$new/dev/${n%:*}
	if [ ! -c "$f" ]; then
		rm -f "$f"
		mknod -m 0666 "$f" c 1 "${n#*:}"
	fi
done
rm -f "$new"/var/cache/apt/archives/*.deb

version=$(chroot "$new" /usr/sbin/dovecot --version)
case $version in
2.4.*) ;;
*)
	echo "install-dovecot24: $suite's dovecot is version $version, not 2.4" >&2
	exit 1
	;;
esac
printf 'dovecot %s\nmade by e2e/install-dovecot24.sh on %s from %s\n' "$version" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$mirror" >"$new/$marker"
mv "$new" "$dir"
echo "install-dovecot24: made $dir in $(($(date +%s) - start)) s: dovecot $version"
