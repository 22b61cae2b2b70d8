#!/usr/bin/env bash
# tests/lxd/debian.sh: build and import the Debian bookworm base image `github-runner-test-debian`
# (systemd as PID 1, real cloud-init with a NoCloud seed that LXD fills from user.user-data, as
# on Ubuntu's LXD images), then prove it with a smoke container. tests/lxd/setup.sh runs it last;
# it needs the daemon and default profile that setup.sh makes.
#
# Idempotent: the image carries a recipe hash (property "recipe"); when the image on the daemon
# has the current one, nothing is built and a re-run takes about a second. The debootstrapped
# root filesystem is cached, packed, under CACHE_DIR by its own hash, and the downloaded .debs
# too, so a changed template re-imports in seconds and a changed package list does not download
# everything again.
#
# Knobs (environment):
#   LXD_TEST_DEBIAN_ALIAS    image alias                                  [github-runner-test-debian]
#   LXD_TEST_DEBIAN_MIRROR   Debian archive                               [http://deb.debian.org/debian]
#   LXD_TEST_DEBIAN_CACHE    cache directory (rootfs tarballs, .debs)     [/var/cache/github-runner-test]
#   LXD_TEST_SKIP_SMOKE      1 = skip the smoke container                 [0]
#   LXD_TEST_DEBIAN_SMOKE    1 = run it even when the image was up to date [0]
#
# Log: /var/log/github-runner-lxd-test/debian.log (debootstrap and apt output).
set -euo pipefail

T0=$(date +%s%N)
say() {
	local ms=$((($(date +%s%N) - T0) / 1000000))
	printf '[%4d.%03ds] debian: %s\n' $((ms / 1000)) $((ms % 1000)) "$*"
}
die() {
	say "ERROR: $*" >&2
	exit 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { # secs FROM_MS: seconds since FROM_MS, one decimal
	local d=$(($(now_ms) - $1))
	printf '%d.%d' $((d / 1000)) $((d % 1000 / 100))
}

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export DEBIAN_FRONTEND=noninteractive

ALIAS="${LXD_TEST_DEBIAN_ALIAS:-github-runner-test-debian}"
MIRROR="${LXD_TEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE_DIR="${LXD_TEST_DEBIAN_CACHE:-/var/cache/github-runner-test}"
SKIP_SMOKE="${LXD_TEST_SKIP_SMOKE:-0}"
SUITE=bookworm

RUN_DIR=/run/github-runner-lxd-test
LOG_DIR=/var/log/github-runner-lxd-test
LOG="$LOG_DIR/debian.log"

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, apt-get, the LXD socket)"
mkdir -p "$RUN_DIR" "$LOG_DIR" "$CACHE_DIR/debs"

# Our own lock (setup.sh, which calls us, holds its own): two runs must not build at once.
exec 8>"$RUN_DIR/debian.lock"
flock -w 1800 8 || die "another tests/lxd/debian.sh still holds $RUN_DIR/debian.lock after 1800 s"

lxc_() { timeout 120 lxc "$@"; }
timeout 10 lxc query /1.0 >/dev/null 2>&1 || die "no LXD daemon answers; run tests/lxd/setup.sh first"

# ---------------------------------------------------------------- 1. host packages
missing=()
for p in debootstrap zstd; do
	[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	say "apt-get install ${missing[*]} (log: $LOG)"
	apt_install() {
		timeout 1200 apt-get install -y -q --no-install-recommends \
			-o DPkg::Lock::Timeout=600 -o Acquire::http::Timeout=60 -o Acquire::Retries=3 \
			"$@" >>"$LOG" 2>&1
	}
	if ! apt_install "${missing[@]}"; then
		say "apt-get install failed; apt-get update and retry"
		timeout 600 apt-get update -q -o DPkg::Lock::Timeout=600 -o Acquire::http::Timeout=60 \
			>>"$LOG" 2>&1 || { tail -20 "$LOG" >&2; die "apt-get update failed"; }
		apt_install "${missing[@]}" || { tail -20 "$LOG" >&2; die "apt-get install ${missing[*]} failed (see $LOG)"; }
	fi
fi

# ---------------------------------------------------------------- 2. the recipe
# What the image holds beyond minbase. debootstrap adds their Depends (not Recommends).
#   systemd-sysv udev: systemd as PID 1; without udev, networkd waits forever for eth0
#     ("link pending udev initialization": /sys is rw in LXD containers; probe #6).
#   systemd-resolved: DNS from the DHCP lease (LXD's dnsmasq) into /etc/resolv.conf.
#   cloud-init python3-cffi-backend openssh-client: cloud-init fails to start without the
#     last two (its crypto imports and ssh-keygen); dbus: hostnamectl, which cloud-init uses
#     to set the hostname under systemd.
#   ca-certificates netbase sudo iproute2 procps: what jobs and scripts expect of a system.
PACKAGES=(systemd-sysv udev systemd-resolved dbus iproute2 cloud-init python3-cffi-backend
	openssh-client ca-certificates netbase sudo procps less)

# build_rootfs DIR: debootstrap into DIR and make it an image root filesystem.
build_rootfs() {
	local r="$1"
	local inc
	inc=$(
		IFS=,
		echo "${PACKAGES[*]}"
	)
	timeout 1800 debootstrap --variant=minbase --include="$inc" --cache-dir="$CACHE_DIR/debs" \
		"$SUITE" "$r" "$MIRROR" >>"$LOG" 2>&1 || {
		tail -30 "$LOG" >&2
		return 1
	}

	# apt: the archive the build used plus updates and security (deb.debian.org serves both).
	cat >"$r/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb ${MIRROR%/debian}/debian-security $SUITE-security main
EOF
	# Network: DHCP on eth0 by systemd-networkd; DNS by systemd-resolved.
	mkdir -p "$r/etc/systemd/network"
	cat >"$r/etc/systemd/network/10-eth0.network" <<'EOF'
[Match]
Name=eth0

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
	chroot "$r" systemctl enable systemd-networkd systemd-resolved >>"$LOG" 2>&1
	ln -sf ../run/systemd/resolve/stub-resolv.conf "$r/etc/resolv.conf"

	# cloud-init: NoCloud only (the seed LXD renders; see the templates), so boot never probes
	# other clouds (the ds-identify and metadata-service timeouts cost seconds). The network is
	# ours (above), not cloud-init's. apt's sources stay as written above: cloud-init would
	# otherwise rewrite them from its template, with security.debian.org, which the sandbox
	# does not reach.
	cat >"$r/etc/cloud/cloud.cfg.d/90-github-runner-test.cfg" <<'EOF'
# tests/lxd/debian.sh: LXD's image templates fill the NoCloud seed in
# /var/lib/cloud/seed/nocloud-net from the instance's user.* keys.
datasource_list: [ NoCloud, None ]
network: {config: disabled}
apt:
  preserve_sources_list: true
EOF

	# cloud-init's locale module sets LANG=en_US.UTF-8 (Debian's default) and fails when that
	# locale is not generated; with it generated and already the default, the module does nothing.
	sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' "$r/etc/locale.gen"
	chroot "$r" locale-gen >>"$LOG" 2>&1
	echo 'LANG=en_US.UTF-8' >"$r/etc/default/locale"
	# systemd-binfmt cannot mount binfmt_misc in an unprivileged container: it fails, and
	# systemd would report the system "degraded".
	chroot "$r" systemctl mask systemd-binfmt.service >>"$LOG" 2>&1

	# Documentation, manual pages and translations: a third of the image and nothing a test
	# reads. Kept out of later installs too, as in Debian's slim container images.
	cat >"$r/etc/dpkg/dpkg.cfg.d/90-github-runner-test-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
	find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
	find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
	rm -rf "$r"/usr/share/man/* "$r"/usr/share/info/*
	find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +

	# First boot of each instance must look like a fresh machine: a new machine-id (systemd
	# makes one when the file is empty), no hostname (the template and cloud-init set it), no
	# cloud-init state, no apt lists or cached .debs (stale ones only mislead apt), no logs.
	: >"$r/etc/machine-id"
	rm -f "$r/var/lib/dbus/machine-id" "$r/etc/hostname" "$r"/etc/ssh/ssh_host_*
	rm -rf "$r"/var/lib/cloud/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
		"$r"/var/cache/apt/archives/partial/* "$r"/var/lib/apt/lists/* "$r"/var/log/*.log \
		"$r"/var/log/apt/* "$r"/tmp/* "$r"/var/tmp/*
	mkdir -p "$r/var/lib/cloud/seed/nocloud-net" "$r/var/lib/apt/lists/partial"
}

# write_metadata DIR: DIR/metadata.yaml and DIR/templates, as Ubuntu's LXD images have them.
write_metadata() {
	local d="$1"
	mkdir -p "$d/templates"
	# instance-id from the name: a copy (or an instance of a published image) is a new
	# instance, so cloud-init runs its per-instance modules (and the user-data) again.
	cat >"$d/templates/cloud-init-meta.tpl" <<'EOF'
instance-id: {{ container.name }}
local-hostname: {{ container.name }}
{{ config_get("user.meta-data", "") }}
EOF
	echo '{{ config_get("user.user-data", properties.default) }}' >"$d/templates/cloud-init-user.tpl"
	echo '{{ config_get("user.vendor-data", properties.default) }}' >"$d/templates/cloud-init-vendor.tpl"
	echo '{{ container.name }}' >"$d/templates/hostname.tpl"
	cat >"$d/templates/hosts.tpl" <<'EOF'
127.0.1.1	{{ container.name }}
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
	# user-data and vendor-data also at start, so a key set after create is seen (cloud-init
	# still runs a script once per instance-id); meta-data and names at create/copy only.
	cat >"$d/metadata.yaml" <<EOF
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  description: github-runner test Debian $SUITE (debootstrap minbase, systemd, cloud-init NoCloud)
  os: debian
  release: $SUITE
  variant: cloud
  recipe: "$recipe"
templates:
  /var/lib/cloud/seed/nocloud-net/meta-data:
    when: [create, copy]
    create_only: false
    template: cloud-init-meta.tpl
  /var/lib/cloud/seed/nocloud-net/user-data:
    when: [create, copy, start]
    create_only: false
    template: cloud-init-user.tpl
    properties:
      default: |
        #cloud-config
        {}
  /var/lib/cloud/seed/nocloud-net/vendor-data:
    when: [create, copy, start]
    create_only: false
    template: cloud-init-vendor.tpl
    properties:
      default: |
        #cloud-config
        {}
  /etc/hostname:
    when: [create, copy]
    create_only: false
    template: hostname.tpl
  /etc/hosts:
    when: [create, copy]
    create_only: false
    template: hosts.tpl
EOF
}

arch=$(dpkg --print-architecture)
# rootfs_recipe: what goes into the root filesystem; recipe: that plus the metadata.
rootfs_recipe=$({
	declare -f build_rootfs
	echo "${PACKAGES[*]} $SUITE $MIRROR $arch"
} | sha256sum | cut -c1-16)
recipe=$({
	echo "$rootfs_recipe"
	declare -f write_metadata
} | sha256sum | cut -c1-16)

have=$(lxc_ image show "$ALIAS" 2>/dev/null | sed -n 's/^ *recipe: *"\{0,1\}\([0-9a-f]*\)"\{0,1\}$/\1/p' || true)
if [ "$have" = "$recipe" ]; then
	say "image '$ALIAS' up to date (recipe $recipe)"
else
	rootfs_tar="$CACHE_DIR/debian-$SUITE-$arch-$rootfs_recipe.rootfs.tar.zst"
	if [ -s "$rootfs_tar" ]; then
		say "using cached root filesystem $rootfs_tar"
	else
		work=$(mktemp -d /var/tmp/github-runner-test-debian.XXXXXX)
		# A failed build must not leave a half-made root filesystem (or its mounts) behind.
		# shellcheck disable=SC2064 # expand $work now
		trap "umount -R '$work/rootfs/proc' '$work/rootfs/sys' 2>/dev/null; rm -rf '$work'" EXIT
		t=$(now_ms)
		say "debootstrap $SUITE minbase from $MIRROR (log: $LOG; about 2-4 min)"
		# Not `build_rootfs ... || die`: that would switch off set -e inside it.
		build_rootfs "$work/rootfs"
		say "TIMING debootstrap+configure $(secs "$t") s"
		t=$(now_ms)
		# Split image: this is the root filesystem tarball (rootfs at its top); the metadata
		# tarball is made fresh at each import. --numeric-owner keeps the ids as built.
		tar -C "$work/rootfs" --numeric-owner --xattrs --xattrs-include='*' --zstd \
			-cf "$rootfs_tar.tmp" . || die "cannot pack the root filesystem"
		mv "$rootfs_tar.tmp" "$rootfs_tar"
		say "TIMING pack $(secs "$t") s ($(du -m "$rootfs_tar" | cut -f1) MB packed, $(du -sm "$work/rootfs" | cut -f1) MB unpacked)"
		rm -rf "$work"
		trap - EXIT
		# Older rootfs tarballs of this suite are of older recipes.
		find "$CACHE_DIR" -maxdepth 1 -name "debian-$SUITE-$arch-*.rootfs.tar.zst" ! -name "${rootfs_tar##*/}" -delete
	fi
	t=$(now_ms)
	meta=$(mktemp -d /var/tmp/github-runner-test-debian-meta.XXXXXX)
	write_metadata "$meta"
	tar -C "$meta" --numeric-owner --owner=0 --group=0 -czf "$meta/meta.tar.gz" metadata.yaml templates
	old=$(lxc_ image info "$ALIAS" 2>/dev/null | sed -n 's/^Fingerprint: *//p' || true)
	# Import first, then move the alias: other tests may be launching the old image meanwhile,
	# and a failed import must leave it in place.
	out=$(timeout 600 lxc image import "$meta/meta.tar.gz" "$rootfs_tar" 2>&1) || die "cannot import the image: $out"
	new=$(echo "$out" | sed -n 's/.*fingerprint: *\([0-9a-f]\{64\}\).*/\1/p')
	[ -n "$new" ] || die "cannot tell the imported image's fingerprint from: $out"
	if [ -n "$old" ]; then
		lxc_ image alias delete "$ALIAS" >/dev/null
		lxc_ image alias create "$ALIAS" "$new" >/dev/null
		lxc_ image delete "$old" >/dev/null || say "note: could not delete old image $old"
	else
		lxc_ image alias create "$ALIAS" "$new" >/dev/null
	fi
	rm -rf "$meta"
	say "TIMING import $(secs "$t") s"
	imported=1
fi
fingerprint=$(lxc_ image info "$ALIAS" | sed -n 's/^Fingerprint: *//p')
size=$(lxc_ image info "$ALIAS" | sed -n 's/^Size: *//p')
say "image '$ALIAS' = ${fingerprint:0:12} ($size, recipe $recipe)"

# ---------------------------------------------------------------- 3. smoke test
# A container whose "#!" user-data (run by cloud-init's scripts-user under systemd) writes what
# it sees, then, once cloud-init is done, powers off; LXD must report it Stopped.
# It runs after an import (or with LXD_TEST_DEBIAN_SMOKE=1): an image that passed it once is the
# same image, and the boot takes 10-40 s, which would make every re-run of setup.sh that slow.
if [ "$SKIP_SMOKE" = 1 ]; then
	say "smoke test skipped (LXD_TEST_SKIP_SMOKE=1)"
	exit 0
fi
if [ "${imported:-0}" != 1 ] && [ "${LXD_TEST_DEBIAN_SMOKE:-0}" != 1 ]; then
	say "smoke test skipped: the image passed it when imported (LXD_TEST_DEBIAN_SMOKE=1 runs it)"
	exit 0
fi
smoke="lxdtest-debian-smoke-$$"
smoke_cleanup() {
	for _ in $(seq 30); do
		timeout 60 lxc delete -f "$smoke" >/dev/null 2>&1 && break
		timeout 10 lxc query "/1.0/instances/$smoke" >/dev/null 2>&1 || break
		sleep 1
	done
}
trap smoke_cleanup EXIT
# cloud-final runs the script; the background part outlives it (the unit's KillMode=process),
# waits until cloud-init is done and powers off.
lxc_ init "$ALIAS" "$smoke" -c user.user-data='#!/bin/sh
date +%s%N >/root/user-data-ran
{ echo "pid1=$(ps -p 1 -o comm=)"; echo "hostname=$(hostname)"; } >>/root/user-data-ran
nohup sh -c "cloud-init status --wait >/root/cloud-init-status 2>&1; poweroff" >/dev/null 2>&1 &
' >/dev/null
t=$(now_ms)
lxc_ start "$smoke" >/dev/null
status=""
for _ in $(seq 1200); do # at most ~120 s
	status=$(lxc_ list "^$smoke\$" -c s --format csv)
	[ "$status" = STOPPED ] && break
	sleep 0.1
done
stopped=$(secs "$t")
if [ "$status" != STOPPED ]; then
	lxc_ exec "$smoke" -- sh -c 'cloud-init status --long; systemctl --failed --no-pager; tail -30 /var/log/cloud-init-output.log' >&2 || true
	die "smoke: $smoke still $status 120 s after start; cloud-init or poweroff broken"
fi
ran=$(lxc_ file pull "$smoke/root/user-data-ran" - 2>/dev/null || true)
cis=$(lxc_ file pull "$smoke/root/cloud-init-status" - 2>/dev/null || true)
case "$ran" in
*pid1=systemd*"hostname=$smoke"*) ;;
*) die "smoke: the user-data did not run under systemd with the instance's hostname (got '$ran')" ;;
esac
case "$cis" in
*"status: done"*) ;;
*) die "smoke: cloud-init did not finish cleanly (cloud-init status: '$cis')" ;;
esac
ran_ns=$(echo "$ran" | head -1)
boot_ms=$((ran_ns / 1000000 - t))
say "TIMING boot->user-data $((boot_ms / 1000)).$((boot_ms % 1000 / 100)) s, start->stopped $stopped s"
say "smoke: cloud-init ran the user-data under systemd, reported done, and poweroff stopped $smoke"
lxc_ delete "$smoke" >/dev/null
trap - EXIT
say "DONE: image '$ALIAS' ${fingerprint:0:12}"
