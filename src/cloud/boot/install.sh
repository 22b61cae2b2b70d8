#!/bin/sh
# install.sh TARBALL VERSION: run as root in the image builder. Lays the
# runner application out for the runner user, with the directories the
# runner instances' files go into, and leaves the image clean for its first
# boot as a runner. POSIX sh and busybox-compatible.
set -eu
tarball=$1
version=$2
user=ubuntu
home=/home/$user
app=$home/actions-runner

say() { printf 'install: %s\n' "$*"; }

if ! id "$user" >/dev/null 2>&1; then
	say "creating user $user"
	if command -v useradd >/dev/null 2>&1; then
		useradd --create-home --home-dir "$home" --shell /bin/bash "$user"
	else
		adduser -D -h "$home" -s /bin/sh "$user"
	fi
fi
# Jobs that use Docker need the group; the image may not have Docker.
if grep -q '^docker:' /etc/group 2>/dev/null; then
	if command -v usermod >/dev/null 2>&1; then usermod -aG docker "$user"; else addgroup "$user" docker; fi
fi

say "unpacking runner $version into $app"
rm -rf "$app"
mkdir -p "$app"
tar -xzf "$tarball" -C "$app"
[ -x "$app/run.sh" ] || { echo "install: the runner tarball has no executable run.sh" >&2; exit 1; }
chown -R "$user:$user" "$home"

mkdir -p /etc/github-runner /var/lib/github-runner
chmod 0755 /etc/github-runner
# The JIT config lands here: root's alone.
chmod 0700 /var/lib/github-runner
printf '%s\n' "$version" >/etc/github-runner/runner-version

# First boot of every runner must run its user-data again.
if command -v cloud-init >/dev/null 2>&1; then cloud-init clean --logs || true; fi
rm -f /var/lib/cloud/user-data.done /var/lib/cloud/user-data.sh
rm -f "$tarball" /var/log/boot.log /var/log/user-data.log
say "done"
