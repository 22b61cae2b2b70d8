#!/bin/sh
# tools.sh: run as root in the image builder after install.sh, with the
# unit's proxies in the environment (apt reads http_proxy and https_proxy).
# Installs the tools jobs expect on a base with apt-get: Docker (the runner
# user in the docker group, the daemon started on first use and reading
# the instance's proxies), git, curl, wget, jq, unzip, zip, python3-pip,
# ShellCheck, and the GitHub CLI where the archive has it. Turns off what
# would change the image under a job (apt's timers, unattended-upgrades)
# and leaves no apt cache. On a base without apt-get it says what it
# skipped and succeeds. POSIX sh.
set -eu
user=ubuntu
# The per-instance file the manager writes (boot.EnvironmentPath): the
# proxies and mirror of the unit as they are when the runner starts, not
# as they were at build time.
environment=/etc/github-runner/environment
packages="ca-certificates curl wget git openssh-client jq unzip zip xz-utils python3-pip shellcheck sudo docker.io"

say() { printf 'tools: %s\n' "$*"; }

if ! command -v apt-get >/dev/null 2>&1; then
	say "no apt-get on this base: skipped apt update and upgrade, $packages gh, the Docker setup, apt timers and unattended-upgrades"
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Bounded: another apt (cloud-init's, a timer's) holds the lock for at most
# this long, and every download is retried.
apt_opts="-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3 -o Acquire::http::Timeout=30 -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef"
bounded() {
	if command -v timeout >/dev/null 2>&1; then timeout 900 "$@"; else "$@"; fi
}
# retry WHAT CMD...: the builder's network may come up after it runs
# commands, and an archive mirror may fail once.
retry() {
	what=$1
	shift
	n=1
	until bounded "$@"; do
		[ "$n" -lt 5 ] || { echo "tools: cannot $what after $n tries" >&2; return 1; }
		say "cannot $what (try $n); again in $((n * 5)) s"
		sleep $((n * 5))
		n=$((n + 1))
	done
}

# First, so a timer does not take apt's lock under the build, nor change
# packages under a job.
timers="apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service"
if [ -d /run/systemd/system ]; then
	# shellcheck disable=SC2086
	systemctl stop $timers >/dev/null 2>&1 || :
fi
mkdir -p /etc/systemd/system
for unit in $timers; do
	# What `systemctl mask` does, without a running systemd.
	ln -sf /dev/null "/etc/systemd/system/$unit"
done
say "masked $timers"

# Services that packages install are not started in the builder: their
# state (Docker's /var/lib/docker) does not belong in the image, the build
# is faster, and the builder needs no nesting for them.
policy=/usr/sbin/policy-rc.d
had_policy=false
[ ! -e "$policy" ] || had_policy=true
if ! $had_policy; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 0755 "$policy"
fi
restore_policy() { $had_policy || rm -f "$policy"; }
trap restore_policy EXIT

say "apt-get update"
# shellcheck disable=SC2086
retry "update the package lists" apt-get $apt_opts update
say "apt-get upgrade"
# shellcheck disable=SC2086
retry "upgrade the packages" apt-get $apt_opts -y upgrade

if dpkg-query -W -f='${Status}' unattended-upgrades 2>/dev/null | grep -q 'ok installed'; then
	say "purging unattended-upgrades"
	# shellcheck disable=SC2086
	apt-get $apt_opts -y purge unattended-upgrades
fi

# gh and python-is-python3 only where the archive has them (Debian
# bookworm and Ubuntu noble have both).
extra=
for optional in gh python-is-python3; do
	candidate=$(apt-cache policy "$optional" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
	if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
		extra="$extra $optional"
	else
		say "no $optional in this base's archive: skipped"
	fi
done
say "installing $packages$extra"
# Without recommends: they would add a compiler, man pages and more to
# every runner's disk (jobs install what they need with apt).
# shellcheck disable=SC2086
retry "install the tools" apt-get $apt_opts -y install --no-install-recommends $packages $extra

if id "$user" >/dev/null 2>&1; then
	usermod -aG docker "$user"
	say "$user is in the docker group"
else
	echo "tools: no user $user to put in the docker group" >&2
	exit 1
fi
# Jobs install what they need with sudo apt-get, as on GitHub's runners
# and as Ubuntu's images let their default user (cloud-init's rule); a
# base whose user has no such rule (install.sh made it) gets one.
if ! sudo -n -l -U "$user" 2>/dev/null | grep -q 'NOPASSWD: *ALL'; then
	printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$user" >/etc/sudoers.d/90-github-runner
	chmod 0440 /etc/sudoers.d/90-github-runner
	say "$user may run sudo without a password"
fi

# The daemon reads the instance's proxies (the environment file is
# written per instance, so a proxy change needs no rebuild). It starts on
# first use (docker.socket), not at boot: the runner comes online sooner,
# and by the first `docker` of a job the manager's files are in place on a
# virtual machine too, whose files arrive after boot.
mkdir -p /etc/systemd/system/docker.service.d
cat >/etc/systemd/system/docker.service.d/http-proxy.conf <<EOF
# Written by the github-runner charm's image build: the unit's proxies.
[Service]
EnvironmentFile=-$environment
EOF
if command -v systemctl >/dev/null 2>&1; then
	systemctl disable docker.service containerd.service >/dev/null 2>&1 || :
	systemctl enable docker.socket >/dev/null 2>&1 || :
fi
say "Docker starts on first use and reads its proxies from $environment"

say "cleaning apt's caches and lists"
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/apt/* 2>/dev/null || :

missing=
for tool in docker git curl wget jq unzip zip pip3 shellcheck sudo; do
	command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
[ -z "$missing" ] || { echo "tools: missing after the install:$missing" >&2; exit 1; }
say "done: $(docker --version 2>/dev/null || echo docker); $(git --version); $(gh --version 2>/dev/null | head -n 1 || echo 'no gh')"
